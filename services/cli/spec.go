package cli

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/dynamicpb"
	"google.golang.org/protobuf/types/known/durationpb"
	"sigs.k8s.io/yaml"

	rolloutv1 "github.com/sluicehq/sluice/proto/gen/sluice/rollout/v1"
)

// ParseSpec reads a rollout spec written in YAML (or JSON) with the proto
// JSON field names (lowerCamel, e.g. stableRevision; the proto names such as
// stable_revision are accepted too) and returns the RolloutSpec.
//
// The YAML is converted to JSON and decoded by protojson with unknown fields
// refused. Before that, the document is walked against the message schema so
// that an unknown field, a second member of a one-of or a value of the wrong
// type is reported with its path, e.g.
// "strategy.canary.steps[1].pause.duration: invalid duration "30s0"".
// Durations accept Go syntax (30s, 1m30s, 1h) as well as protojson's
// seconds form (1.5s). ParseSpec does not check the server's validation rules.
func ParseSpec(data []byte) (*rolloutv1.RolloutSpec, error) {
	js, err := yaml.YAMLToJSONStrict(data)
	if err != nil {
		return nil, fmt.Errorf("parse YAML: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.UseNumber()
	var doc any
	if err := dec.Decode(&doc); err != nil {
		return nil, fmt.Errorf("parse YAML: %w", err)
	}
	if doc == nil {
		return nil, errors.New("the spec is empty")
	}
	obj, ok := doc.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("the spec must be a mapping of fields, not %s", jsonKind(doc))
	}
	spec := &rolloutv1.RolloutSpec{}
	if err := checkMessage(spec.ProtoReflect().Descriptor(), obj, ""); err != nil {
		return nil, err
	}
	js, err = json.Marshal(obj)
	if err != nil {
		return nil, fmt.Errorf("re-encode spec: %w", err)
	}
	if err := (protojson.UnmarshalOptions{DiscardUnknown: false}).Unmarshal(js, spec); err != nil {
		return nil, errors.New(cleanProtoError(err))
	}
	return spec, nil
}

// checkMessage walks obj against md. It reports the first unknown field,
// duplicate one-of member or badly typed value with its path, and rewrites
// Go-syntax durations into protojson's form in place.
func checkMessage(md protoreflect.MessageDescriptor, obj map[string]any, path string) error {
	oneofs := map[protoreflect.FullName]string{}
	seen := map[protoreflect.FieldNumber]string{}
	for _, key := range sortedKeys(obj) {
		val := obj[key]
		p := joinPath(path, key)
		fd := md.Fields().ByJSONName(key)
		if fd == nil {
			fd = md.Fields().ByName(protoreflect.Name(key))
		}
		if fd == nil {
			return fmt.Errorf("%s: unknown field %q (known: %s)", p, key, knownFields(md))
		}
		if other, ok := seen[fd.Number()]; ok {
			return fmt.Errorf("%s: set twice, also as %s", p, other)
		}
		seen[fd.Number()] = key
		if val == nil {
			continue // protojson treats null as absent
		}
		if od := fd.ContainingOneof(); od != nil && !od.IsSynthetic() {
			if other, ok := oneofs[od.FullName()]; ok {
				return fmt.Errorf("%s: only one of %s may be set, and %s is set too", p, oneofMembers(od), other)
			}
			oneofs[od.FullName()] = key
		}
		var err error
		switch {
		case fd.IsMap():
			err = checkMap(md, fd, key, val, p)
		case fd.IsList():
			err = checkList(md, fd, key, val, p)
		default:
			var out any
			out, err = checkValue(md, fd, key, val, p)
			obj[key] = out
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func checkMap(parent protoreflect.MessageDescriptor, fd protoreflect.FieldDescriptor, key string, val any, p string) error {
	m, ok := val.(map[string]any)
	if !ok {
		return fmt.Errorf("%s: want a mapping, got %s", p, jsonKind(val))
	}
	vd := fd.MapValue()
	for _, k := range sortedKeys(m) {
		ep := p + "." + k
		if isPlainMessage(vd) {
			sub, ok := m[k].(map[string]any)
			if !ok {
				return fmt.Errorf("%s: want a mapping, got %s", ep, jsonKind(m[k]))
			}
			if err := checkMessage(vd.Message(), sub, ep); err != nil {
				return err
			}
			continue
		}
		if err := tryField(parent, key, map[string]any{k: m[k]}, m[k], ep, vd); err != nil {
			return err
		}
	}
	return nil
}

func checkList(parent protoreflect.MessageDescriptor, fd protoreflect.FieldDescriptor, key string, val any, p string) error {
	l, ok := val.([]any)
	if !ok {
		return fmt.Errorf("%s: want a list, got %s", p, jsonKind(val))
	}
	for i, e := range l {
		ep := fmt.Sprintf("%s[%d]", p, i)
		if isPlainMessage(fd) {
			sub, ok := e.(map[string]any)
			if !ok {
				return fmt.Errorf("%s: want a mapping, got %s", ep, jsonKind(e))
			}
			if err := checkMessage(fd.Message(), sub, ep); err != nil {
				return err
			}
			continue
		}
		out, err := fixDuration(fd, e, ep)
		if err != nil {
			return err
		}
		l[i] = out
		if err := tryField(parent, key, []any{out}, out, ep, fd); err != nil {
			return err
		}
	}
	return nil
}

// checkValue checks a singular field and returns its (possibly rewritten)
// value.
func checkValue(parent protoreflect.MessageDescriptor, fd protoreflect.FieldDescriptor, key string, val any, p string) (any, error) {
	if isPlainMessage(fd) {
		sub, ok := val.(map[string]any)
		if !ok {
			return val, fmt.Errorf("%s: want a mapping, got %s", p, jsonKind(val))
		}
		return sub, checkMessage(fd.Message(), sub, p)
	}
	out, err := fixDuration(fd, val, p)
	if err != nil {
		return val, err
	}
	return out, tryField(parent, key, out, out, p, fd)
}

// tryField decodes {key: val} into an empty parent message, so protojson
// itself judges a scalar or well-known-type value; shown is the offending
// element (val, or one element of a list or map).
func tryField(parent protoreflect.MessageDescriptor, key string, val, shown any, p string, fd protoreflect.FieldDescriptor) error {
	js, err := json.Marshal(map[string]any{key: val})
	if err != nil {
		return fmt.Errorf("%s: %w", p, err)
	}
	if err := protojson.Unmarshal(js, dynamicpb.NewMessage(parent)); err != nil {
		return fmt.Errorf("%s: invalid %s value %s", p, typeName(fd), short(shown, fd))
	}
	return nil
}

// fixDuration rewrites a google.protobuf.Duration given in Go syntax (5m,
// 1h30m) into protojson's seconds form; other values pass unchanged.
func fixDuration(fd protoreflect.FieldDescriptor, val any, p string) (any, error) {
	if fd.Kind() != protoreflect.MessageKind || fd.Message().FullName() != "google.protobuf.Duration" {
		return val, nil
	}
	s, ok := val.(string)
	if !ok {
		return val, fmt.Errorf("%s: invalid duration %v: give a number with a unit, e.g. 30s, 5m, 1h30m", p, val)
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return val, fmt.Errorf("%s: invalid duration %q: give a number with a unit, e.g. 30s, 5m, 1h30m", p, s)
	}
	js, err := protojson.Marshal(durationpb.New(d))
	if err != nil {
		return val, fmt.Errorf("%s: duration %q: %w", p, s, err)
	}
	var out string
	if err := json.Unmarshal(js, &out); err != nil {
		return val, fmt.Errorf("%s: duration %q: %w", p, s, err)
	}
	return out, nil
}

// isPlainMessage reports a message field that is walked field by field, as
// opposed to scalars and well-known types, which have their own JSON forms.
func isPlainMessage(fd protoreflect.FieldDescriptor) bool {
	return fd.Kind() == protoreflect.MessageKind && !strings.HasPrefix(string(fd.Message().FullName()), "google.protobuf.")
}

func typeName(fd protoreflect.FieldDescriptor) string {
	switch fd.Kind() {
	case protoreflect.MessageKind:
		if fd.Message().FullName() == "google.protobuf.Duration" {
			return "duration"
		}
		return string(fd.Message().FullName())
	case protoreflect.EnumKind:
		return "enum"
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind,
		protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		return "integer"
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind, protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		return "unsigned integer"
	}
	return fd.Kind().String()
}

func short(val any, fd protoreflect.FieldDescriptor) string {
	b, err := json.Marshal(val)
	if err != nil {
		return fmt.Sprint(val)
	}
	s := string(b)
	if fd.Kind() == protoreflect.StringKind {
		if _, isString := val.(string); !isString {
			s += " (quote it to make it a string)"
		}
	}
	return s
}

func knownFields(md protoreflect.MessageDescriptor) string {
	names := make([]string, md.Fields().Len())
	for i := range names {
		names[i] = md.Fields().Get(i).JSONName()
	}
	return strings.Join(names, ", ")
}

func oneofMembers(od protoreflect.OneofDescriptor) string {
	names := make([]string, od.Fields().Len())
	for i := range names {
		names[i] = od.Fields().Get(i).JSONName()
	}
	return strings.Join(names, ", ")
}

func joinPath(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func jsonKind(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case map[string]any:
		return "a mapping"
	case []any:
		return "a list"
	case string:
		return "a string"
	case json.Number:
		return "a number"
	case bool:
		return "a boolean"
	}
	return fmt.Sprintf("%T", v)
}

// cleanProtoError drops protojson's "proto: (line 1:23): " prefix, whose
// position refers to the intermediate JSON, not to the user's YAML.
func cleanProtoError(err error) string {
	s := strings.TrimPrefix(err.Error(), "proto:")
	s = strings.TrimLeft(s, " \u00a0")
	if strings.HasPrefix(s, "(line ") {
		if i := strings.Index(s, "):"); i >= 0 {
			s = strings.TrimLeft(s[i+2:], " \u00a0")
		}
	}
	return "invalid spec: " + s
}

func sortedKeys[V any](m map[string]V) []string {
	return slices.Sorted(maps.Keys(m))
}
