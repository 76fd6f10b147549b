package api

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	artifactv1 "github.com/sluicehq/sluice/proto/gen/sluice/artifact/v1"
	"github.com/sluicehq/sluice/proto/gen/sluice/artifact/v1/artifactv1connect"
	"github.com/sluicehq/sluice/services/artifact"
)

// Artifacts stores and reads artifacts (an *artifact.Store).
type Artifacts interface {
	Put(ctx context.Context, p artifact.Push, r io.Reader) (artifact.Artifact, bool, error)
	Get(ctx context.Context, digest string) (artifact.Artifact, error)
	List(ctx context.Context) ([]artifact.Artifact, error)
}

// ArtifactHandler implements ArtifactService.
type ArtifactHandler struct {
	Artifacts Artifacts
}

var _ artifactv1connect.ArtifactServiceHandler = (*ArtifactHandler)(nil)

// WithArtifacts serves ArtifactService with h.
func WithArtifacts(h *ArtifactHandler) MountOption {
	return func(o *mountOptions) { o.artifacts = h }
}

func mountArtifacts(mux *http.ServeMux, h *ArtifactHandler, opts connect.HandlerOption) string {
	mux.Handle(artifactv1connect.NewArtifactServiceHandler(h, opts))
	return artifactv1connect.ArtifactServiceName
}

// PushArtifact implements ArtifactService.
func (h *ArtifactHandler) PushArtifact(ctx context.Context, stream *connect.ClientStream[artifactv1.PushArtifactRequest]) (*connect.Response[artifactv1.PushArtifactResponse], error) {
	if !stream.Receive() {
		if err := stream.Err(); err != nil {
			return nil, err
		}
		return nil, invalidArgumentField("header", "the push is empty; the first message must be the header")
	}
	hdr := stream.Msg().GetHeader()
	if hdr == nil {
		return nil, invalidArgumentField("header", "the first message must be the header")
	}
	body := &chunks{stream: stream}
	a, created, err := h.Artifacts.Put(ctx, artifact.Push{Name: hdr.GetName(), Digest: hdr.GetDigest(), PushedBy: hdr.GetPushedBy()}, body)
	if err != nil {
		return nil, artifactError(err)
	}
	return connect.NewResponse(&artifactv1.PushArtifactResponse{
		Artifact: artifactToProto(a),
		Revision: hdr.GetName() + "@sha256:" + a.Digest,
		Created:  created,
	}), nil
}

// GetArtifact implements ArtifactService.
func (h *ArtifactHandler) GetArtifact(ctx context.Context, req *connect.Request[artifactv1.GetArtifactRequest]) (*connect.Response[artifactv1.GetArtifactResponse], error) {
	a, err := h.Artifacts.Get(ctx, req.Msg.GetDigest())
	if err != nil {
		return nil, artifactError(err)
	}
	return connect.NewResponse(&artifactv1.GetArtifactResponse{Artifact: artifactToProto(a)}), nil
}

// ListArtifacts implements ArtifactService.
func (h *ArtifactHandler) ListArtifacts(ctx context.Context, req *connect.Request[artifactv1.ListArtifactsRequest]) (*connect.Response[artifactv1.ListArtifactsResponse], error) {
	all, err := h.Artifacts.List(ctx)
	if err != nil {
		return nil, artifactError(err)
	}
	out := &artifactv1.ListArtifactsResponse{}
	for _, a := range all {
		if n := req.Msg.GetName(); n != "" && a.Name != n {
			continue
		}
		out.Artifacts = append(out.Artifacts, artifactToProto(a))
	}
	return connect.NewResponse(out), nil
}

// chunks reads the pushed bytes from the messages after the header.
type chunks struct {
	stream *connect.ClientStream[artifactv1.PushArtifactRequest]
	buf    []byte
}

// errPushProtocol marks a malformed push (a second header).
var errPushProtocol = errors.New("a push sends one header, then only chunks")

func (c *chunks) Read(p []byte) (int, error) {
	for len(c.buf) == 0 {
		if !c.stream.Receive() {
			if err := c.stream.Err(); err != nil {
				return 0, err
			}
			return 0, io.EOF
		}
		m := c.stream.Msg()
		if m.GetHeader() != nil {
			return 0, errPushProtocol
		}
		c.buf = m.GetChunk()
	}
	n := copy(p, c.buf)
	c.buf = c.buf[n:]
	return n, nil
}

// artifactError translates a store error into a Connect error.
func artifactError(err error) error {
	var ce *connect.Error
	var me *artifact.MismatchError
	switch {
	case errors.As(err, &ce):
		return ce
	case errors.As(err, &me):
		return invalidArgumentField("header.digest", me.Error())
	case errors.Is(err, artifact.ErrInvalid):
		return invalidArgumentField("header.name", err.Error())
	case errors.Is(err, artifact.ErrTooLarge):
		return invalidArgumentField("chunk", err.Error())
	case errors.Is(err, artifact.ErrFormat):
		return invalidArgumentField("chunk", err.Error())
	case errors.Is(err, errPushProtocol):
		return invalidArgumentField("header", err.Error())
	case errors.Is(err, artifact.ErrNotFound):
		return connect.NewError(connect.CodeNotFound, err)
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return connect.NewError(connect.CodeCanceled, err)
	}
	return connect.NewError(connect.CodeUnavailable, fmt.Errorf("artifact store: %w", err))
}

func artifactToProto(a artifact.Artifact) *artifactv1.Artifact {
	format := artifactv1.Format_FORMAT_UNSPECIFIED
	switch a.Format {
	case artifact.FormatExecutable:
		format = artifactv1.Format_FORMAT_EXECUTABLE
	case artifact.FormatTarGz:
		format = artifactv1.Format_FORMAT_TAR_GZIP
	}
	out := &artifactv1.Artifact{
		Digest:     a.Digest,
		Name:       a.Name,
		Size:       a.Size,
		Format:     format,
		Entrypoint: a.Entrypoint,
		PushedBy:   a.PushedBy,
		Revision:   a.Revision(),
	}
	if !a.PushedAt.IsZero() {
		out.PushedAt = timestamppb.New(a.PushedAt)
	}
	return out
}
