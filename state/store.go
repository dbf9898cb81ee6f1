package state

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime/debug"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Record is the durable form of one job, stored as JSON.
type Record struct {
	ID string `json:"id"`
	MachineState
	Settings     Settings       `json:"settings"`
	Totals       Totals         `json:"totals"`
	Loader       LoaderProgress `json:"loader"`
	LastProgress time.Time      `json:"last_progress"`
	Checkpoints  []Checkpoint   `json:"checkpoints,omitempty"`
	// Total is the job's declared total; nil in records written before
	// totals existed, and for jobs without one.
	Total *Total `json:"total,omitempty"`
}

// Store keeps job records durably. Put and Delete are atomic over all their
// arguments and durable when they return nil. Implementations are safe for
// concurrent use.
type Store interface {
	// Load returns every stored record.
	Load() ([]Record, error)
	// Put inserts or replaces the records, all or none.
	Put(recs ...Record) error
	// Delete removes the records with these ids; missing ids are ignored.
	Delete(ids ...string) error
	Close() error
}

// MemStore is an in-memory Store for tests. Records are kept as JSON, as on
// disk, so what a test loads went through the same encoding. The zero value
// is ready to use.
type MemStore struct {
	mu   sync.Mutex
	recs map[string][]byte
}

// Load implements Store.
func (s *MemStore) Load() ([]Record, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Record, 0, len(s.recs))
	for id, b := range s.recs {
		var r Record
		if err := json.Unmarshal(b, &r); err != nil {
			return nil, fmt.Errorf("state: record %q: %w", id, err)
		}
		out = append(out, r)
	}
	sort.Slice(out, func(i, k int) bool { return out[i].ID < out[k].ID })
	return out, nil
}

// Put implements Store.
func (s *MemStore) Put(recs ...Record) error {
	enc := make(map[string][]byte, len(recs))
	for _, r := range recs {
		b, err := json.Marshal(r)
		if err != nil {
			return fmt.Errorf("state: encode record %q: %w", r.ID, err)
		}
		enc[r.ID] = b
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.recs == nil {
		s.recs = make(map[string][]byte)
	}
	for id, b := range enc {
		s.recs[id] = b
	}
	return nil
}

// Delete implements Store.
func (s *MemStore) Delete(ids ...string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, id := range ids {
		delete(s.recs, id)
	}
	return nil
}

// Close implements Store; a MemStore keeps its records after Close.
func (s *MemStore) Close() error { return nil }

// DBFile is the name of the bbolt file inside the state directory.
const DBFile = "sluice.db"

var (
	bucketJobs = []byte("jobs")
	// bucketMeta holds keyFormat, the mark of a sluice state file: a bbolt
	// database that is someone else's must be refused, not filled with
	// job records beside its own data.
	bucketMeta = []byte("sluice")
	keyFormat  = []byte("format")
)

// fileFormat is the format of the state file this code writes, kept in
// its marker as decimal text.
const fileFormat = 1

// BoltStore is a Store in a bbolt file: every Put is one fsync'ed
// transaction, so a record is either wholly old or wholly new after a crash.
type BoltStore struct {
	db   *bolt.DB
	path string
}

// OpenError reports a state directory that cannot be used. Cause is one of
// "permission denied", "held by another process", "corrupt",
// CauseForeign, CauseNewer or "error".
type OpenError struct {
	Path  string
	Cause string
	Err   error
}

func (e *OpenError) Error() string {
	return fmt.Sprintf("state: open %s: %s: %v", e.Path, e.Cause, e.Err)
}

func (e *OpenError) Unwrap() error { return e.Err }

// Causes of an OpenError for a file sluice will not use as it is.
const (
	// CauseForeign: a bbolt database that is not a sluice state file.
	CauseForeign = "not a sluice state file"
	// CauseNewer: a state file written by a newer sluice, in a format this
	// one does not know.
	CauseNewer = "written by a newer sluice"
)

// lockTimeout bounds the wait for the file lock, so a directory held by a
// running sluice fails fast instead of hanging.
const lockTimeout = time.Second

// OpenBolt opens (creating if needed) <dir>/sluice.db. It fails with an
// *OpenError naming the path and the cause when the directory or file is not
// accessible, the file is locked by another process (after one second), or
// the file is not a valid database.
func OpenBolt(dir string) (*BoltStore, error) {
	return openBolt(dir, lockTimeout)
}

func openBolt(dir string, timeout time.Duration) (_ *BoltStore, err error) {
	// A directory entry reaches the disk when its directory is synced,
	// not the file: bbolt syncs the file it creates, but without this a
	// power loss right after the first jobs were recorded can leave a
	// directory without sluice.db, or without the directory itself. The
	// directories made here are synced, and dir at every open: a start
	// that died before its sync leaves nothing to say it was not done.
	dir = filepath.Clean(dir) // as missingDirs walks it
	made, err := missingDirs(dir)
	if err != nil {
		return nil, openError(dir, err, timeout)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, openError(dir, err, timeout)
	}
	toSync := []string{dir}
	for _, d := range made {
		toSync = append(toSync, filepath.Dir(d))
	}
	path := filepath.Join(dir, DBFile)
	// bbolt panics on pages it cannot make sense of (a file cut short
	// refers to pages past its end), and reading the memory map past the
	// end of the file can fault: either is a corrupt file, not a crash.
	// The file stays open, its lock held: a half-read database is not
	// closed, and the process does not start anyway.
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if p := recover(); p != nil {
			err = &OpenError{Path: path, Cause: "corrupt", Err: fmt.Errorf("%v", p)}
		}
	}()
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: timeout})
	if err != nil {
		return nil, openError(path, err, timeout)
	}
	if err := db.Update(adopt); err != nil {
		db.Close()
		var oe *OpenError
		if errors.As(err, &oe) {
			oe.Path = path
			return nil, oe
		}
		return nil, openError(path, err, timeout)
	}
	for _, d := range toSync {
		if err := syncDir(d); err != nil {
			db.Close()
			return nil, openError(d, err, timeout)
		}
	}
	s := &BoltStore{db: db, path: path}
	// Decode everything once so a corrupt record is reported at open.
	if _, err := s.Load(); err != nil {
		db.Close()
		return nil, &OpenError{Path: path, Cause: "corrupt", Err: err}
	}
	return s, nil
}

// adopt makes the file in tx sluice's, or refuses it with an *OpenError
// (its Path left for the caller). A file without buckets is new: it gets
// the marker. A file with the jobs bucket alone was written before files
// were marked: it gets the marker too, so that older files keep opening.
// Any other file without the marker is someone else's database, one
// SLUICE_STATE_DIR was pointed at by mistake: writing job records into it
// would mix them with its data, and its owner's next open may choke on
// them. A file whose marker says a newer format is refused as well: this
// code cannot tell what else that format changed.
func adopt(tx *bolt.Tx) error {
	if meta := tx.Bucket(bucketMeta); meta != nil {
		v := meta.Get(keyFormat)
		n, err := strconv.Atoi(string(v))
		switch {
		case err != nil || n < 1:
			return &OpenError{Cause: CauseForeign, Err: fmt.Errorf("bucket %q holds no sluice format marker (%s is %q)", bucketMeta, keyFormat, v)}
		case n > fileFormat:
			return &OpenError{Cause: CauseNewer, Err: fmt.Errorf("file format %d, this sluice reads up to %d", n, fileFormat)}
		}
		_, err = tx.CreateBucketIfNotExists(bucketJobs)
		return err
	}
	var others []string
	err := tx.ForEach(func(name []byte, _ *bolt.Bucket) error {
		if !bytes.Equal(name, bucketJobs) {
			others = append(others, strconv.Quote(string(name)))
		}
		return nil
	})
	if err != nil {
		return err
	}
	if len(others) > 0 {
		if len(others) > 5 {
			others = append(others[:5], "…")
		}
		return &OpenError{Cause: CauseForeign, Err: fmt.Errorf("a bbolt database with buckets %s and no sluice format marker", strings.Join(others, ", "))}
	}
	if _, err := tx.CreateBucketIfNotExists(bucketJobs); err != nil {
		return err
	}
	meta, err := tx.CreateBucket(bucketMeta)
	if err != nil {
		return err
	}
	return meta.Put(keyFormat, []byte(strconv.Itoa(fileFormat)))
}

// missingDirs returns dir and those of its parents that do not exist, the
// deepest first.
func missingDirs(dir string) ([]string, error) {
	var missing []string
	for d := filepath.Clean(dir); ; d = filepath.Dir(d) {
		_, err := os.Stat(d)
		if err == nil {
			return missing, nil
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
		missing = append(missing, d)
		if filepath.Dir(d) == d {
			return missing, nil
		}
	}
}

// syncDir makes the entries of directory dir durable. A filesystem that
// cannot sync a directory (EINVAL, ENOTSUP) has nothing to make durable
// that way, and a directory sluice may write in but not read (a parent
// with mode 0733) cannot be synced by it: neither stops a start.
var syncDir = func(dir string) error {
	f, err := os.Open(dir)
	if errors.Is(err, fs.ErrPermission) {
		return nil
	}
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Sync(); err != nil && !errors.Is(err, syscall.EINVAL) && !errors.Is(err, syscall.ENOTSUP) {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	return nil
}

func openError(path string, err error, lockWait time.Duration) error {
	cause := "error"
	switch {
	case errors.Is(err, fs.ErrPermission), errors.Is(err, syscall.EROFS):
		cause = "permission denied"
	case errors.Is(err, bolt.ErrTimeout):
		cause = "held by another process"
		err = fmt.Errorf("lock not acquired within %s: %w", lockWait, err)
	case errors.Is(err, bolt.ErrInvalid), errors.Is(err, bolt.ErrChecksum),
		errors.Is(err, bolt.ErrVersionMismatch), errors.Is(err, bolt.ErrInvalidMapping):
		cause = "corrupt"
	case errors.Is(err, syscall.ENOTDIR):
		cause = "not a directory"
	}
	return &OpenError{Path: path, Cause: cause, Err: err}
}

// Path returns the database file's path.
func (s *BoltStore) Path() string { return s.path }

// Load implements Store.
func (s *BoltStore) Load() ([]Record, error) {
	var out []Record
	err := s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketJobs)
		if b == nil {
			return fmt.Errorf("bucket %q missing", bucketJobs)
		}
		return b.ForEach(func(k, v []byte) error {
			var r Record
			if err := json.Unmarshal(v, &r); err != nil {
				return fmt.Errorf("record %q: %w", k, err)
			}
			out = append(out, r)
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("state: load %s: %w", s.path, err)
	}
	return out, nil
}

// Put implements Store.
func (s *BoltStore) Put(recs ...Record) error {
	if len(recs) == 0 {
		return nil
	}
	enc := make([][]byte, len(recs))
	for i, r := range recs {
		b, err := json.Marshal(r)
		if err != nil {
			return fmt.Errorf("state: encode record %q: %w", r.ID, err)
		}
		enc[i] = b
	}
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketJobs)
		for i, r := range recs {
			if err := b.Put([]byte(r.ID), enc[i]); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("state: put %d records in %s: %w", len(recs), s.path, err)
	}
	return nil
}

// Delete implements Store.
func (s *BoltStore) Delete(ids ...string) error {
	if len(ids) == 0 {
		return nil
	}
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketJobs)
		for _, id := range ids {
			if err := b.Delete([]byte(id)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("state: delete %d records in %s: %w", len(ids), s.path, err)
	}
	return nil
}

// Close implements Store.
func (s *BoltStore) Close() error {
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("state: close %s: %w", s.path, err)
	}
	return nil
}
