package definition

import (
	"fmt"
	"sort"
	"strings"
)

// FieldError is one problem in a flag-definition document. Path is a JSON
// Pointer (RFC 6901) to the offending value, from the root of the document
// that was parsed ("" is the root itself, "/flags/new-ui/defaultVariant" a
// flag's default variant).
type FieldError struct {
	Path    string
	Message string
}

func (e *FieldError) Error() string {
	if e.Path == "" {
		return e.Message
	}
	return e.Path + ": " + e.Message
}

// ValidationError is returned when a document is not a valid flag
// definition. It lists every problem found, sorted by path; an API layer
// reports it as InvalidArgument with one field violation per entry.
// errors.As also finds the first *FieldError through it.
type ValidationError struct {
	Errors []*FieldError // never empty
}

func (e *ValidationError) Error() string {
	var b strings.Builder
	b.WriteString("invalid flag definition: ")
	b.WriteString(e.Errors[0].Error())
	if n := len(e.Errors) - 1; n > 0 {
		fmt.Fprintf(&b, " (and %d more)", n)
	}
	return b.String()
}

// Unwrap returns the field errors.
func (e *ValidationError) Unwrap() []error {
	errs := make([]error, len(e.Errors))
	for i, fe := range e.Errors {
		errs[i] = fe
	}
	return errs
}

// problem is a FieldError with its severity. A fatal problem makes the
// document unusable even for Load, because flagd would refuse it too or
// there is no sensible reading of it; the others only violate flagd's
// schema or our stricter checks, and flagd serves such documents.
type problem struct {
	FieldError
	fatal bool
}

// problems collects the problems found in one document.
type problems struct {
	list []problem
}

func (p *problems) add(fatal bool, path, format string, args ...any) {
	p.list = append(p.list, problem{FieldError{Path: path, Message: fmt.Sprintf(format, args...)}, fatal})
}

// soft records a schema violation that flagd tolerates.
func (p *problems) soft(path, format string, args ...any) { p.add(false, path, format, args...) }

// fatal records a problem that makes the document unusable.
func (p *problems) fatal(path, format string, args ...any) { p.add(true, path, format, args...) }

func (p *problems) sorted(onlyFatal bool) []*FieldError {
	var out []*FieldError
	for i := range p.list {
		if onlyFatal && !p.list[i].fatal {
			continue
		}
		out = append(out, &p.list[i].FieldError)
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out
}

func (p *problems) anyFatal() bool {
	for _, q := range p.list {
		if q.fatal {
			return true
		}
	}
	return false
}

// pointer appends one reference token to a JSON Pointer.
func pointer(base, token string) string {
	token = strings.ReplaceAll(token, "~", "~0")
	token = strings.ReplaceAll(token, "/", "~1")
	return base + "/" + token
}
