package temporal_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"

	"github.com/sluicehq/sluice/devstack/temporal"
)

const (
	taskQueue   = "devstack-test"
	updateName  = "add"
	finishName  = "finish"
	counterName = "counter"
)

// counterWorkflow adds the values of "add" updates to a total and returns the total when it
// receives the "finish" signal.
func counterWorkflow(ctx workflow.Context, start int) (int, error) {
	total := start
	if err := workflow.SetUpdateHandlerWithOptions(ctx, updateName,
		func(ctx workflow.Context, n int) (int, error) {
			total += n
			return total, nil
		},
		workflow.UpdateHandlerOptions{Validator: func(ctx workflow.Context, n int) error {
			if n < 0 {
				return errors.New("negative increment")
			}
			return nil
		}},
	); err != nil {
		return 0, err
	}
	workflow.GetSignalChannel(ctx, finishName).Receive(ctx, nil)
	return total, nil
}

func startWorker(t *testing.T, c client.Client) {
	t.Helper()
	w := worker.New(c, taskQueue, worker.Options{})
	w.RegisterWorkflowWithOptions(counterWorkflow, workflow.RegisterOptions{Name: counterName})
	if err := w.Start(); err != nil {
		t.Fatalf("start worker: %v", err)
	}
	t.Cleanup(w.Stop)
}

func dial(t *testing.T, s *temporal.Server) client.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := s.Dial(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

func startCounter(t *testing.T, ctx context.Context, c client.Client, id string, start int) client.WorkflowRun {
	t.Helper()
	run, err := c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: id, TaskQueue: taskQueue}, counterName, start)
	if err != nil {
		t.Fatalf("start workflow %s: %v", id, err)
	}
	return run
}

func update(ctx context.Context, c client.Client, id string, n int) (int, error) {
	h, err := c.UpdateWorkflow(ctx, client.UpdateWorkflowOptions{
		WorkflowID:   id,
		UpdateName:   updateName,
		Args:         []any{n},
		WaitForStage: client.WorkflowUpdateStageCompleted,
	})
	if err != nil {
		return 0, err
	}
	var total int
	err = h.Get(ctx, &total)
	return total, err
}

func TestWorkflowWithUpdates(t *testing.T) {
	s := temporal.StartTB(t, temporal.Options{})
	c := dial(t, s)
	startWorker(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	run := startCounter(t, ctx, c, "counter-updates", 10)
	for i, tc := range []struct{ add, want int }{{1, 11}, {5, 16}} {
		got, err := update(ctx, c, "counter-updates", tc.add)
		if err != nil || got != tc.want {
			t.Fatalf("update %d add %d: got %d, %v; want %d, nil", i, tc.add, got, err, tc.want)
		}
	}
	if _, err := update(ctx, c, "counter-updates", -1); err == nil || !strings.Contains(err.Error(), "negative increment") {
		t.Fatalf("update add -1: got error %v, want the validator's rejection", err)
	}
	if err := c.SignalWorkflow(ctx, "counter-updates", "", finishName, nil); err != nil {
		t.Fatalf("signal: %v", err)
	}
	var total int
	if err := run.Get(ctx, &total); err != nil || total != 16 {
		t.Fatalf("workflow result: got %d, %v; want 16, nil", total, err)
	}
}

func TestRestartKeepsWorkflows(t *testing.T) {
	s := temporal.StartTB(t, temporal.Options{})
	hostPort := s.HostPort()
	c := dial(t, s)
	startWorker(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()

	done := startCounter(t, ctx, c, "counter-done", 1)
	if err := c.SignalWorkflow(ctx, "counter-done", "", finishName, nil); err != nil {
		t.Fatalf("signal: %v", err)
	}
	if err := done.Get(ctx, nil); err != nil {
		t.Fatalf("counter-done: %v", err)
	}
	startCounter(t, ctx, c, "counter-open", 100)
	if got, err := update(ctx, c, "counter-open", 1); err != nil || got != 101 {
		t.Fatalf("update before restart: got %d, %v; want 101, nil", got, err)
	}

	for _, restart := range []struct {
		name string
		stop func() error
	}{
		{"after SIGKILL", s.Kill},
		{"after SIGTERM", s.Stop},
	} {
		if err := restart.stop(); err != nil {
			t.Fatalf("%s: %v", restart.name, err)
		}
		if s.Running() {
			t.Fatalf("%s: server still running", restart.name)
		}
		t0 := time.Now()
		if err := s.Restart(ctx); err != nil {
			t.Fatalf("restart %s: %v", restart.name, err)
		}
		if s.HostPort() != hostPort {
			t.Fatalf("restart %s: host:port changed from %s to %s", restart.name, hostPort, s.HostPort())
		}
		t.Logf("restart %s took %s", restart.name, time.Since(t0))
		desc, err := c.DescribeWorkflowExecution(ctx, "counter-done", "")
		if err != nil {
			t.Fatalf("describe counter-done %s: %v", restart.name, err)
		}
		if got := desc.GetWorkflowExecutionInfo().GetStatus(); got != enumspb.WORKFLOW_EXECUTION_STATUS_COMPLETED {
			t.Fatalf("counter-done %s: status %v, want COMPLETED", restart.name, got)
		}
	}

	// The client and worker created before the restarts reconnect on their own.
	// Stale membership rows used to keep matching out of the ring for up to a minute after a
	// restart; temporal-dev clears them, so this takes well under a second.
	t1 := time.Now()
	got, err := update(ctx, c, "counter-open", 2)
	t.Logf("first update after the restarts took %s", time.Since(t1))
	if err != nil || got != 103 {
		t.Fatalf("update after restarts: got %d, %v; want 103, nil", got, err)
	}
	if err := c.SignalWorkflow(ctx, "counter-open", "", finishName, nil); err != nil {
		t.Fatalf("signal after restarts: %v", err)
	}
	var total int
	if err := c.GetWorkflow(ctx, "counter-open", "").Get(ctx, &total); err != nil || total != 103 {
		t.Fatalf("counter-open result: got %d, %v; want 103, nil", total, err)
	}
}

func TestServersSideBySide(t *testing.T) {
	const n = 2
	servers := make([]*temporal.Server, n)
	var wg sync.WaitGroup
	errs := make([]error, n)
	bin, err := temporal.FindBinary()
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		wg.Go(func() {
			s, err := temporal.Start(context.Background(), temporal.Options{
				Binary:    bin,
				DBFile:    filepath.Join(t.TempDir(), fmt.Sprintf("side-%d.db", i)),
				Namespace: fmt.Sprintf("side-%d", i),
			})
			servers[i], errs[i] = s, err
		})
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("server %d: %v", i, errs[i])
		}
		t.Cleanup(func() { _ = servers[i].Stop() })
	}
	if servers[0].HostPort() == servers[1].HostPort() {
		t.Fatalf("both servers on %s", servers[0].HostPort())
	}
	for i, s := range servers {
		c := dial(t, s)
		if _, err := c.CheckHealth(context.Background(), &client.CheckHealthRequest{}); err != nil {
			t.Errorf("server %d health: %v", i, err)
		}
	}
}

func TestStartWithoutBinary(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "no-such-temporal-dev")
	_, err := temporal.Start(context.Background(), temporal.Options{Binary: missing, DBFile: filepath.Join(t.TempDir(), "x.db")})
	if err == nil || !strings.Contains(err.Error(), "make tools") {
		t.Fatalf("Start with a missing binary: got %v, want an error that mentions `make tools`", err)
	}
}

// fatalRecorder is a testing.TB that records Fatalf instead of failing the real test.
type fatalRecorder struct {
	testing.TB
	mu    sync.Mutex
	fatal string
}

func (r *fatalRecorder) Fatalf(format string, args ...any) {
	r.mu.Lock()
	r.fatal = fmt.Sprintf(format, args...)
	r.mu.Unlock()
	runtime.Goexit()
}

func (r *fatalRecorder) Helper() {}

func TestStartTBFailsLoudlyWithoutBinary(t *testing.T) {
	t.Setenv(temporal.BinaryEnv, filepath.Join(t.TempDir(), "no-such-temporal-dev"))
	rec := &fatalRecorder{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		temporal.StartTB(rec, temporal.Options{})
	}()
	<-done
	if !strings.Contains(rec.fatal, "make tools") || !strings.Contains(rec.fatal, temporal.BinaryEnv) {
		t.Fatalf("StartTB without a binary: Fatalf(%q), want a message naming %s and `make tools`", rec.fatal, temporal.BinaryEnv)
	}
}

func TestStartOnTakenPort(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	bin, err := temporal.FindBinary()
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	_, err = temporal.Start(context.Background(), temporal.Options{
		Binary: bin,
		DBFile: filepath.Join(t.TempDir(), "taken.db"),
		Port:   port,
	})
	t.Logf("Start on a taken port: %v", err)
	if err == nil || !strings.Contains(err.Error(), "address already in use") {
		t.Fatalf("Start on taken port %d: got %v, want an error quoting the server's bind failure", port, err)
	}
}
