package flagvariant

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/sluicehq/sluice/flags/definition"
	"github.com/sluicehq/sluice/flags/source"
)

// cacheFile is what the agent keeps of an environment's last snapshot, so
// that after a restart with NATS away its flags serve the variants they
// served before, as its routes do from state.json.
type cacheFile struct {
	Environment string          `json:"environment"`
	Revision    uint64          `json:"revision"`
	Flags       json.RawMessage `json:"flags"` // the flagd document
}

func (e *Evaluators) cachePath(env string) string {
	return filepath.Join(e.cacheDir, "flags-"+env+".json")
}

// writeCache stores snap's document for its environment, atomically (a
// temporary file renamed over the old one). Failures are logged: the cache
// only matters after a restart.
func (e *Evaluators) writeCache(snap source.Snapshot) {
	if e.cacheDir == "" || len(snap.JSON) == 0 {
		return
	}
	b, err := json.Marshal(cacheFile{Environment: snap.Environment, Revision: snap.Revision, Flags: snap.JSON})
	if err == nil {
		err = writeFileAtomic(e.cachePath(snap.Environment), b)
	}
	if err != nil {
		e.log.Warn("flag variants: cannot write the cache", "environment", snap.Environment, "err", err)
	}
}

// loadCache puts every followed environment's cached snapshot in service,
// unless a snapshot arrived already.
func (e *Evaluators) loadCache() {
	if e.cacheDir == "" {
		return
	}
	for name, en := range e.envs {
		b, err := os.ReadFile(e.cachePath(name))
		if os.IsNotExist(err) {
			continue
		}
		var c cacheFile
		if err == nil {
			err = json.Unmarshal(b, &c)
		}
		var set *definition.Set
		if err == nil && c.Environment != name {
			err = fmt.Errorf("holds environment %q", c.Environment)
		}
		if err == nil {
			set, _, err = definition.Load(c.Flags)
		}
		if err != nil {
			e.log.Warn("flag variants: ignoring the cache", "environment", name, "err", err)
			continue
		}
		if en.cur.Load() == nil {
			e.set(en, source.Snapshot{Environment: name, Revision: c.Revision, Set: set})
			e.log.Info("flag variants: serving cached flags until the store answers", "environment", name, "revision", c.Revision)
		}
	}
}

func writeFileAtomic(name string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(name), 0o755); err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(name), filepath.Base(name)+".*.tmp")
	if err != nil {
		return err
	}
	_, werr := f.Write(data)
	serr := f.Sync()
	cerr := f.Close()
	if err := errors.Join(werr, serr, cerr); err != nil {
		_ = os.Remove(f.Name())
		return err
	}
	return os.Rename(f.Name(), name)
}
