package definition_test

import (
	"errors"
	"fmt"

	"github.com/sluicehq/sluice/flags/definition"
)

func ExampleParse() {
	set, err := definition.Parse([]byte(`{
	  "$schema": "https://flagd.dev/schema/v0/flags.json",
	  "flags": {
	    "new-checkout": {
	      "state": "ENABLED",
	      "variants": {"on": true, "off": false},
	      "defaultVariant": "off",
	      "targeting": {"if": [{"$ref": "staff"}, "on"]},
	      "metadata": {"owner": "payments"}
	    }
	  },
	  "$evaluators": {"staff": {"ends_with": [{"var": "email"}, "@example.com"]}},
	  "metadata": {"flagSetId": "shop", "version": "3"}
	}`))
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(set.Keys(), set.Flags["new-checkout"].DefaultVariant)
	// Output: [new-checkout] off
}

func ExampleValidationError() {
	_, err := definition.Parse([]byte(`{"flags": {"new-checkout": {
	  "state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "of"}}}`))
	var ve *definition.ValidationError
	if errors.As(err, &ve) {
		for _, fe := range ve.Errors {
			fmt.Printf("InvalidArgument at %s: %s\n", fe.Path, fe.Message)
		}
	}
	// Output: InvalidArgument at /flags/new-checkout/defaultVariant: "of" is not one of the flag's variants ("off", "on")
}
