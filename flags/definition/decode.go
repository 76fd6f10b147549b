package definition

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// decode parses data as one JSON value into the types encoding/json uses
// for an any (map[string]any, []any, string, float64, bool, nil). Unlike
// json.Unmarshal it reports duplicate object keys, which are almost always
// a mistake in a hand-written flag file; as in encoding/json, the last
// occurrence wins.
func decode(data []byte, p *problems) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	v, err := decodeValue(dec, "", p)
	if err != nil {
		// The token decoder's offsets are approximate; json.Unmarshal
		// reports where the syntax error is.
		var x any
		if uerr := json.Unmarshal(data, &x); uerr != nil {
			err = uerr
		}
		return nil, describeJSONError(err)
	}
	end := dec.InputOffset()
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("invalid JSON: unexpected data after the top-level value, which ends at offset %d", end)
	}
	return v, nil
}

// decodeFast returns a decoder that parses data with json.Unmarshal into
// the same types as decode, without reporting duplicate keys; on invalid
// JSON it reports the error as decode does.
func decodeFast(data []byte) func(*problems) (any, error) {
	return func(p *problems) (any, error) {
		var v any
		if err := json.Unmarshal(data, &v); err != nil {
			return decode(data, p)
		}
		return v, nil
	}
}

func decodeValue(dec *json.Decoder, path string, p *problems) (any, error) {
	tok, err := dec.Token()
	if err != nil {
		return nil, err
	}
	d, ok := tok.(json.Delim)
	if !ok {
		return tok, nil // string, float64, bool or nil
	}
	switch d {
	case '{':
		m := map[string]any{}
		for dec.More() {
			kt, err := dec.Token()
			if err != nil {
				return nil, err
			}
			key := kt.(string) // the decoder guarantees object keys are strings
			at := pointer(path, key)
			v, err := decodeValue(dec, at, p)
			if err != nil {
				return nil, err
			}
			if _, dup := m[key]; dup {
				p.soft(at, "duplicate key %q (the last occurrence is used)", key)
			}
			m[key] = v
		}
		if _, err := dec.Token(); err != nil { // '}'
			return nil, err
		}
		return m, nil
	case '[':
		a := []any{}
		for i := 0; dec.More(); i++ {
			v, err := decodeValue(dec, pointer(path, fmt.Sprint(i)), p)
			if err != nil {
				return nil, err
			}
			a = append(a, v)
		}
		if _, err := dec.Token(); err != nil { // ']'
			return nil, err
		}
		return a, nil
	}
	return nil, fmt.Errorf("unexpected %v", d)
}

func describeJSONError(err error) error {
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return fmt.Errorf("invalid JSON at offset %d: %v", se.Offset, se)
	}
	return fmt.Errorf("invalid JSON: %v", err)
}
