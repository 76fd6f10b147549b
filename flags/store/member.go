package store

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
)

// setMember returns the JSON object obj with the member name set to value,
// leaving every other byte as written: the value of an existing member is
// replaced in place (the last one, which is the one that counts, if the
// name repeats), a missing member is added first.
func setMember(obj []byte, name string, value []byte) ([]byte, error) {
	dec := json.NewDecoder(bytes.NewReader(obj))
	tok, err := dec.Token()
	if err != nil {
		return nil, err
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return nil, errors.New("not a JSON object")
	}
	open := int(dec.InputOffset()) // just after '{'
	start, end := -1, -1
	for dec.More() {
		kt, err := dec.Token()
		if err != nil {
			return nil, err
		}
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return nil, err
		}
		if kt.(string) == name {
			end = int(dec.InputOffset())
			start = end - len(raw)
		}
	}
	if _, err := dec.Token(); err != nil { // '}'
		return nil, err
	}
	var out bytes.Buffer
	if start >= 0 {
		out.Write(obj[:start])
		out.Write(value)
		out.Write(obj[end:])
		return out.Bytes(), nil
	}
	k, _ := json.Marshal(name)
	out.Write(obj[:open])
	out.Write(k)
	out.WriteByte(':')
	out.Write(value)
	if len(bytes.TrimSpace(obj[open:])) > 1 { // more than the closing '}'
		out.WriteByte(',')
	}
	out.Write(obj[open:])
	if !json.Valid(out.Bytes()) {
		return nil, fmt.Errorf("setting %q produced invalid JSON", name)
	}
	return out.Bytes(), nil
}
