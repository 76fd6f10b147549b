package sync

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/sluicehq/sluice/core/route"
)

// StateFile is the name of the persisted state inside the state directory.
const StateFile = "state.json"

// state is the content of StateFile: the last applied desired state of each
// service that has one, with the generation (KV revision) it came from.
type state struct {
	Agent    string               `json:"agent"`
	Services map[string]persisted `json:"services"`
}

type persisted struct {
	Generation uint64        `json:"generation"`
	Desired    route.Desired `json:"desired"`
}

// loadState reads dir/state.json; a missing file is an empty state.
func loadState(dir string) (state, error) {
	path := filepath.Join(dir, StateFile)
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return state{}, nil
	}
	if err != nil {
		return state{}, fmt.Errorf("read persisted state: %w", err)
	}
	var st state
	if err := json.Unmarshal(data, &st); err != nil {
		return state{}, fmt.Errorf("decode persisted state %s: %w", path, err)
	}
	return st, nil
}

// saveState replaces dir/state.json atomically: it writes a temporary file
// in dir, syncs it, renames it over the old file and syncs the directory,
// so a crash leaves either the old or the new state, never a torn one.
func saveState(dir string, st state) (err error) {
	data, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return fmt.Errorf("encode state: %w", err)
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return fmt.Errorf("create state directory: %w", err)
	}
	f, err := os.CreateTemp(dir, StateFile+".tmp-*")
	if err != nil {
		return fmt.Errorf("create temporary state file: %w", err)
	}
	defer func() {
		if err != nil {
			_ = f.Close()
			_ = os.Remove(f.Name())
		}
	}()
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("write temporary state file: %w", err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("sync temporary state file: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("close temporary state file: %w", err)
	}
	if err := os.Rename(f.Name(), filepath.Join(dir, StateFile)); err != nil {
		return fmt.Errorf("replace state file: %w", err)
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("open state directory to sync: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync state directory: %w", err)
	}
	return nil
}
