package metricshook_test

import (
	"context"
	"errors"
	"log"
	"net/http"
	"os/signal"
	"syscall"

	"github.com/open-feature/go-sdk/openfeature"

	"github.com/sluicehq/sluice/flags/metricshook"
)

// An app that Sluice's agent does not front counts its requests per flag
// variant itself. (Not run: it needs NATS and a flag provider.)
func Example() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()

	rec, err := metricshook.New(metricshook.Options{Service: "shop", NATSURL: "nats://nats:4222"})
	if err != nil {
		log.Fatal(err)
	}
	runCtx, stopRun := context.WithCancel(context.Background())
	published := make(chan struct{})
	go func() {
		defer close(published)
		if err := rec.Run(runCtx); err != nil {
			log.Print(err)
		}
	}()
	openfeature.AddHooks(rec.Hook())
	client := openfeature.NewDefaultClient()

	mux := http.NewServeMux()
	mux.HandleFunc("/checkout", func(w http.ResponseWriter, r *http.Request) {
		user := openfeature.NewEvaluationContext(r.Header.Get("X-User"), nil)
		// Evaluated with the request's context, so this request counts
		// under "flag:new-checkout:<variant>".
		if on, _ := client.BooleanValue(r.Context(), "new-checkout", false, user); on {
			_, _ = w.Write([]byte("new checkout"))
			return
		}
		_, _ = w.Write([]byte("old checkout"))
	})
	srv := &http.Server{Addr: ":8080", Handler: rec.Middleware(mux)}
	go func() {
		<-ctx.Done()
		_ = srv.Shutdown(context.Background()) // waits for the requests in flight
		stopRun()                              // then publishes the last second
	}()
	if err := srv.ListenAndServe(); !errors.Is(err, http.ErrServerClosed) {
		log.Print(err)
		stopRun()
	}
	<-published
}
