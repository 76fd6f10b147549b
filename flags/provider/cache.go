package provider

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/sluicehq/sluice/flags/definition"
)

// cacheFile is the cache file's content: the flagd document last received,
// with the environment it belongs to, so that a file written for another
// environment is never served.
type cacheFile struct {
	// Format identifies the file; cacheFormat.
	Format      string          `json:"format"`
	Environment string          `json:"environment"`
	SavedAt     time.Time       `json:"savedAt"`
	Flags       json.RawMessage `json:"flags"`
}

const cacheFormat = "sluice-flags-cache/v1"

// writeCache writes doc to the cache file, unless it is what was last
// written: to a temporary file in the same directory, synced, then renamed
// over the cache file, so a reader (or a crash) sees the old file or the
// new one, never part of one. Errors are logged: the cache is a fallback.
func (p *Provider) writeCache(doc string) {
	if p.opts.CacheFile == "" || bytes.Equal(p.cacheDoc, []byte(doc)) {
		return
	}
	if !json.Valid([]byte(doc)) {
		return // definition.Load accepted it, so this does not happen
	}
	data, err := json.Marshal(cacheFile{Format: cacheFormat, Environment: p.opts.Environment, SavedAt: p.now().UTC(), Flags: json.RawMessage(doc)})
	if err == nil {
		err = writeFileAtomic(p.opts.CacheFile, data)
	}
	if err != nil {
		p.log.Warn("sluice provider: cannot write the cache file", "file", p.opts.CacheFile, "err", err)
		return
	}
	p.cacheDoc = []byte(doc)
}

func writeFileAtomic(name string, data []byte) (err error) {
	f, err := os.CreateTemp(filepath.Dir(name), "."+filepath.Base(name)+".*.tmp")
	if err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	defer func() {
		if err != nil {
			_ = os.Remove(f.Name())
		}
	}()
	if _, err = f.Write(data); err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), name)
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	return nil
}

// readCache reads the flags of environment env from a cache file.
func readCache(name, env string) (*definition.Set, error) {
	data, err := os.ReadFile(name)
	if err != nil {
		return nil, err
	}
	var c cacheFile
	if err := json.Unmarshal(data, &c); err != nil {
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	switch {
	case c.Format != cacheFormat:
		return nil, fmt.Errorf("read %s: format %q, want %q", name, c.Format, cacheFormat)
	case c.Environment != env:
		return nil, fmt.Errorf("read %s: it holds the flags of environment %q, not %q", name, c.Environment, env)
	case len(c.Flags) == 0:
		return nil, errors.New("read " + name + ": no flags")
	}
	set, _, err := definition.Load(c.Flags)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	return set, nil
}
