package api

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"buf.build/go/protovalidate"
	"connectrpc.com/connect"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/protobuf/proto"

	corerollout "github.com/sluicehq/sluice/core/rollout"
)

// ValidationInterceptor checks every request message against its
// protovalidate annotations and answers InvalidArgument naming each invalid
// field, before a handler runs.
type ValidationInterceptor struct {
	v protovalidate.Validator
}

// NewValidationInterceptor builds the interceptor.
func NewValidationInterceptor() (*ValidationInterceptor, error) {
	v, err := protovalidate.New()
	if err != nil {
		return nil, fmt.Errorf("build validator: %w", err)
	}
	return &ValidationInterceptor{v: v}, nil
}

var _ connect.Interceptor = (*ValidationInterceptor)(nil)

func (i *ValidationInterceptor) check(msg any) error {
	m, ok := msg.(proto.Message)
	if !ok {
		return nil
	}
	err := i.v.Validate(m)
	if err == nil {
		return nil
	}
	var ve *protovalidate.ValidationError
	if !errors.As(err, &ve) {
		return connect.NewError(connect.CodeInvalidArgument, err)
	}
	fields := make([]corerollout.FieldError, 0, len(ve.Violations))
	for _, v := range ve.Violations {
		fields = append(fields, corerollout.FieldError{
			Path:    protovalidate.FieldPathString(v.Proto.GetField()),
			Message: v.Proto.GetMessage(),
		})
	}
	return invalidArgument(fields)
}

// WrapUnary validates unary requests.
func (i *ValidationInterceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		if err := i.check(req.Any()); err != nil {
			return nil, err
		}
		return next(ctx, req)
	}
}

// WrapStreamingClient leaves clients alone.
func (i *ValidationInterceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

// WrapStreamingHandler validates each message a streaming handler receives.
func (i *ValidationInterceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		return next(ctx, &validatingConn{StreamingHandlerConn: conn, check: i.check})
	}
}

type validatingConn struct {
	connect.StreamingHandlerConn
	check func(any) error
}

func (c *validatingConn) Receive(msg any) error {
	if err := c.StreamingHandlerConn.Receive(msg); err != nil {
		return err
	}
	return c.check(msg)
}

// invalidArgument builds the InvalidArgument error: the message lists each
// "path: problem", and a google.rpc.BadRequest detail carries them for
// programs.
func invalidArgument(fields []corerollout.FieldError) error {
	parts := make([]string, len(fields))
	br := &errdetails.BadRequest{}
	for i, f := range fields {
		parts[i] = f.Path + ": " + f.Message
		br.FieldViolations = append(br.FieldViolations, &errdetails.BadRequest_FieldViolation{Field: f.Path, Description: f.Message})
	}
	cerr := connect.NewError(connect.CodeInvalidArgument, errors.New(strings.Join(parts, "; ")))
	if d, err := connect.NewErrorDetail(br); err == nil {
		cerr.AddDetail(d)
	}
	return cerr
}

func invalidArgumentField(path, msg string) error {
	return invalidArgument([]corerollout.FieldError{{Path: path, Message: msg}})
}
