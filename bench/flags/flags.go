package main

// The rules are those of flags/eval's benchmarks (docs/benchmarks-flags.md):
// "targeting" is an if over an "and" of an email-domain ends_with, a
// sem_ver comparison and an in, and the context matches all three, so every
// condition is evaluated; "fractional" has four variants at 25 % each.
const (
	targetingRule  = `{"if": [{"and": [{"ends_with": [{"var": "email"}, "@example.com"]}, {"sem_ver": [{"var": "appVersion"}, ">=", "2.1.0"]}, {"in": [{"var": "plan"}, ["gold", "platinum"]]}]}, "on", "off"]}`
	fractionalRule = `{"fractional": [["clubs", 25], ["diamonds", 25], ["hearts", 25], ["spades", 25]]}`
	suits          = `{"clubs": "c", "diamonds": "d", "hearts": "h", "spades": "s"}`
)

// killFlag is the flag the kill switch turns off and on again.
const killFlag = "new-checkout"

// killOn is killFlag's definition when enabled.
const killOn = `{"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off", "targeting": {"if": [{"ends_with": [{"var": "email"}, "@example.com"]}, "on"]}}`

// benchFlags is the environment every client follows: the three measured
// flags, the kill switch's flag, and a boolean targeting flag for the
// remote ResolveBoolean/OFREP calls.
var benchFlags = []struct{ key, def string }{
	{"static", `{"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "on"}`},
	{"targeting", `{"state": "ENABLED", "variants": {"on": "on", "off": "off"}, "defaultVariant": "off", "targeting": ` + targetingRule + `}`},
	{"fractional", `{"state": "ENABLED", "variants": ` + suits + `, "defaultVariant": "clubs", "targeting": ` + fractionalRule + `}`},
	{"targeting-bool", `{"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off", "targeting": {"if": [{"and": [{"ends_with": [{"var": "email"}, "@example.com"]}, {"sem_ver": [{"var": "appVersion"}, ">=", "2.1.0"]}, {"in": [{"var": "plan"}, ["gold", "platinum"]]}]}, "on", "off"]}}`},
	{killFlag, killOn},
}

// The evaluation context of every measured evaluation, as in flags/eval's
// benchmarks.
const (
	targetingKey = "5c3d8535-f81a-4478-a6d3-afaa4d51199e"
	email        = "jane.doe@example.com"
	appVersion   = "2.4.1"
	plan         = "platinum"
)

func attributes() map[string]any {
	return map[string]any{"email": email, "appVersion": appVersion, "plan": plan}
}
