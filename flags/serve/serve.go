// Package serve evaluates feature flags for remote clients, from a
// source.Source, over three protocols that share one engine (flags/eval):
//
//   - OFREP, the OpenFeature Remote Evaluation Protocol (HTTP+JSON):
//     POST /ofrep/v1/evaluate/flags/{key} and POST /ofrep/v1/evaluate/flags
//     (bulk, with ETag and If-None-Match);
//   - flagd's evaluation service, flagd.evaluation.v1.Service (ResolveBoolean,
//     ResolveString, ResolveInt, ResolveFloat, ResolveObject, ResolveAll and
//     the EventStream of change notifications), for OpenFeature flagd
//     providers in RPC mode, and its successor flagd.evaluation.v2.Service
//     (the same without ResolveAll, with "no value: use your default"),
//     which newer providers call;
//   - flagd's sync service, flagd.sync.v1.FlagSyncService (SyncFlags,
//     FetchAllFlags, GetMetadata), which sends the whole flag configuration
//     on every change, for flagd instances and in-process flagd providers.
//
// Both flagd services speak Connect, gRPC and gRPC-Web; gRPC clients need
// HTTP/2, so mount Handler on a server that accepts h2c (or TLS).
//
// Every request names an environment (see Environment); the Server follows
// each environment it has been asked about with one Watch on the source and
// builds one eval.Evaluator per snapshot, so a change reaches every
// protocol, and every open stream, as soon as the source reports it. The
// evaluation time passed to the engine ($flagd.timestamp) is read once per
// request from Options.Now.
package serve

import (
	"context"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"connectrpc.com/connect"

	"github.com/sluicehq/sluice/flags/source"
	"github.com/sluicehq/sluice/proto/gen/flagd/evaluation/v1/evaluationv1connect"
	"github.com/sluicehq/sluice/proto/gen/flagd/evaluation/v2/evaluationv2connect"
	"github.com/sluicehq/sluice/proto/gen/flagd/sync/v1/syncv1connect"
)

// The path prefixes Handler serves; mount each of them on the API's mux
// (for example mux.Handle(p, srv.Handler()) for p in Paths()).
const (
	// OFREPPath is the prefix of the OFREP endpoints.
	OFREPPath = "/ofrep/v1/"
	// EvaluationPath is the prefix of flagd.evaluation.v1.Service.
	EvaluationPath = "/" + evaluationv1connect.ServiceName + "/"
	// EvaluationV2Path is the prefix of flagd.evaluation.v2.Service.
	EvaluationV2Path = "/" + evaluationv2connect.ServiceName + "/"
	// SyncPath is the prefix of flagd.sync.v1.FlagSyncService.
	SyncPath = "/" + syncv1connect.FlagSyncServiceName + "/"
)

// Options configure a Server. The zero value is usable.
type Options struct {
	// Now returns the evaluation time; time.Now when nil.
	Now func() time.Time
	// KeepAlive is how often an idle EventStream sends a "keep_alive"
	// event, so that proxies do not close it; 30 s when zero, never when
	// negative.
	KeepAlive time.Duration
	// MaxRequestBytes limits request bodies (OFREP) and messages (Connect,
	// gRPC); 1 MiB when zero.
	MaxRequestBytes int64
	// Logger receives the errors that are not the client's fault (a
	// failing source); slog.Default() when nil.
	Logger *slog.Logger
	// ConnectOptions are added to the flagd services' handler options, for
	// example interceptors for authentication.
	ConnectOptions []connect.HandlerOption
}

// Server serves flag evaluations from a source.Source. Create it with New,
// mount Handler, and Close it when done.
type Server struct {
	src     source.Source
	now     func() time.Time
	log     *slog.Logger
	keep    time.Duration
	maxBody int64
	handler http.Handler

	// ctx ends every watch and open stream when the Server is closed; wg
	// counts the watch goroutines.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.Mutex
	views   map[string]*view
	changed chan struct{} // closed and replaced when any view changes
	closed  bool
}

// New returns a Server that serves the flags of src. It starts nothing
// until the first request for an environment.
func New(src source.Source, opts Options) *Server {
	s := &Server{src: src, now: opts.Now, log: opts.Logger, keep: opts.KeepAlive, maxBody: opts.MaxRequestBytes, views: map[string]*view{}, changed: make(chan struct{})}
	if s.log == nil {
		s.log = slog.Default()
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.keep == 0 {
		s.keep = 30 * time.Second
	}
	if s.maxBody <= 0 {
		s.maxBody = 1 << 20
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())

	copts := append([]connect.HandlerOption{connect.WithReadMaxBytes(int(s.maxBody))}, opts.ConnectOptions...)
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+OFREPPath+"evaluate/flags/{key...}", s.ofrepSingle)
	mux.HandleFunc("POST "+OFREPPath+"evaluate/flags", s.ofrepBulk)
	path, h := evaluationv1connect.NewServiceHandler(&evaluationService{s: s}, copts...)
	mux.Handle(path, h)
	path, h = evaluationv2connect.NewServiceHandler(&evaluationV2Service{s: s}, copts...)
	mux.Handle(path, h)
	path, h = syncv1connect.NewFlagSyncServiceHandler(&syncService{s: s}, copts...)
	mux.Handle(path, h)
	s.handler = mux
	return s
}

// Handler returns the handler of every path in Paths.
func (s *Server) Handler() http.Handler { return s.handler }

// Paths returns the path prefixes Handler serves: OFREPPath,
// EvaluationPath, EvaluationV2Path and SyncPath.
func (s *Server) Paths() []string {
	return []string{OFREPPath, EvaluationPath, EvaluationV2Path, SyncPath}
}

// Close stops following the source and ends the open streams (with code
// Unavailable, so that clients reconnect elsewhere), then waits for its
// goroutines. Requests after Close fail with Unavailable (HTTP 500).
func (s *Server) Close() {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.cancel()
	s.wg.Wait()
}
