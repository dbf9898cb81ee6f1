package state

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

func TestStores(t *testing.T) {
	stores := map[string]func(t *testing.T) Store{
		"mem": func(*testing.T) Store { return &MemStore{} },
		"bolt": func(t *testing.T) Store {
			s, err := OpenBolt(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			return s
		},
	}
	for name, open := range stores {
		t.Run(name, func(t *testing.T) {
			s := open(t)
			defer s.Close()
			a := Record{ID: "a", MachineState: MachineState{State: Cleaning, Since: t0, History: []Transition{{From: Cancelling, To: Cleaning, Reason: "cancel_succeeded", At: t0}}},
				Checkpoints: []Checkpoint{{Seq: 1, Data: []byte(`{"o":1}`)}}}
			b := Record{ID: "b", Totals: Totals{Bytes: 7}}
			if err := s.Put(a, b); err != nil {
				t.Fatal(err)
			}
			b.Totals.Bytes = 9
			if err := s.Put(b); err != nil {
				t.Fatal(err)
			}
			if err := s.Delete("a", "missing"); err != nil {
				t.Fatal(err)
			}
			if err := s.Put(a); err != nil {
				t.Fatal(err)
			}
			recs, err := s.Load()
			if err != nil || len(recs) != 2 {
				t.Fatalf("%+v %v", recs, err)
			}
			got := map[string]Record{recs[0].ID: recs[0], recs[1].ID: recs[1]}
			if r := got["a"]; r.State != Cleaning || len(r.History) != 1 || !r.History[0].At.Equal(t0) || string(r.Checkpoints[0].Data) != `{"o":1}` {
				t.Errorf("a = %+v", r)
			}
			if got["b"].Totals.Bytes != 9 {
				t.Errorf("b = %+v", got["b"])
			}
		})
	}
}

func TestOpenBoltErrors(t *testing.T) {
	f := func(name, dir, cause string) {
		t.Helper()
		s, err := openBolt(dir, lockTestTimeout)
		if err == nil {
			s.Close()
			t.Fatalf("%s: opened", name)
		}
		var oe *OpenError
		if !errors.As(err, &oe) || oe.Cause != cause || !strings.Contains(err.Error(), dir) || !strings.Contains(err.Error(), cause) {
			t.Fatalf("%s: %v, want an OpenError naming %s and %q", name, err, dir, cause)
		}
	}

	notDir := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(notDir, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	f("a file as the directory", notDir, "not a directory")

	corrupt := t.TempDir()
	if err := os.WriteFile(filepath.Join(corrupt, DBFile), bytes.Repeat([]byte{0xab}, 64<<10), 0o600); err != nil {
		t.Fatal(err)
	}
	f("garbage file", corrupt, "corrupt")

	badRecord := t.TempDir()
	db, err := bolt.Open(filepath.Join(badRecord, DBFile), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucket(bucketJobs)
		if err != nil {
			return err
		}
		return b.Put([]byte("j"), []byte("{not json"))
	})
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	f("undecodable record", badRecord, "corrupt")

	held := t.TempDir()
	first, err := OpenBolt(held)
	if err != nil {
		t.Fatal(err)
	}
	f("held by another open", held, "held by another process")
	first.Close()
	again, err := OpenBolt(held)
	if err != nil {
		t.Fatalf("reopen after the holder closed: %v", err)
	}
	again.Close()

	if os.Geteuid() == 0 {
		t.Log("running as root: permission test skipped")
		return
	}
	ro := filepath.Join(t.TempDir(), "ro")
	if err := os.Mkdir(ro, 0o500); err != nil {
		t.Fatal(err)
	}
	f("unwritable directory", ro, "permission denied")
}

const lockTestTimeout = 100 * time.Millisecond // the lock wait of the "held" case

// TestOpenBoltTruncated: a database file cut short (a partial copy, a
// disk that lost its tail) whose first pages are intact refers to pages
// past its end. bbolt panics on them, or faults reading the memory map:
// either crashed the process at start instead of reporting a corrupt file.
func TestOpenBoltTruncated(t *testing.T) {
	dir := t.TempDir()
	s, err := OpenBolt(dir)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 50 {
		if err := s.Put(Record{ID: fmt.Sprintf("job-%d", i), MachineState: MachineState{State: Running, Since: t0, Created: t0}}); err != nil {
			t.Fatal(err)
		}
	}
	// Cut in half what the database uses, not the file: bbolt grows the
	// file ahead of its pages, and half the file may hold them all.
	var used int64
	if err := s.db.View(func(tx *bolt.Tx) error { used = tx.Size(); return nil }); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, DBFile)
	if err := os.Truncate(path, used/2); err != nil {
		t.Fatal(err)
	}
	s, err = openBolt(dir, lockTestTimeout)
	if err == nil {
		s.Close()
		t.Fatal("opened")
	}
	var oe *OpenError
	if !errors.As(err, &oe) || oe.Cause != "corrupt" || !strings.Contains(err.Error(), path) {
		t.Fatalf("%v, want an OpenError naming %s, corrupt", err, path)
	}
}

// TestOpenBoltSyncsWhatItCreates: the database file's directory entry, and
// those of the directories made for it, are synced before the store is
// used, or a power loss could lose the file with every record in it; a
// store opened again syncs its directory only.
func TestOpenBoltSyncsWhatItCreates(t *testing.T) {
	var synced []string
	defer func(f func(string) error) { syncDir = f }(syncDir)
	syncDir = func(dir string) error {
		synced = append(synced, dir)
		return nil
	}
	root := t.TempDir()
	dir := filepath.Join(root, "a", "b")
	s, err := OpenBolt(dir)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	slices.Sort(synced)
	if want := []string{root, filepath.Join(root, "a"), dir}; !slices.Equal(synced, want) {
		t.Errorf("synced %q creating %s, want %q", synced, dir, want)
	}
	synced = nil
	if s, err = OpenBolt(dir); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if want := []string{dir}; !slices.Equal(synced, want) {
		t.Errorf("synced %q opening an existing store, want %q: the start that made it may have died before its sync", synced, want)
	}
	synced = nil
	dotted := root + "/x/../d" // not filepath.Join, which would clean it
	if s, err = OpenBolt(dotted); err != nil {
		t.Fatal(err)
	}
	s.Close()
	slices.Sort(synced)
	if want := []string{root, filepath.Join(root, "d")}; !slices.Equal(synced, want) {
		t.Errorf("synced %q creating %s, want %q", synced, dotted, want)
	}
	if _, err := os.Stat(filepath.Join(root, "x")); err == nil {
		t.Errorf("%s made, whose entry nothing synced", filepath.Join(root, "x"))
	}

	syncDir = func(dir string) error { return syscall.EIO }
	if s, err = OpenBolt(filepath.Join(root, "c")); err == nil {
		s.Close()
		t.Error("opened a store whose directory could not be synced")
	} else if !strings.Contains(err.Error(), root) {
		t.Errorf("%v, want the error to name %s", err, root)
	}
}

// TestOpenBoltRefusesForeignFile: a state directory pointed at another
// program's bbolt database was adopted: sluice added its bucket and wrote
// job records among the other program's data. Such a file is refused,
// unchanged, with an error naming it; a new file and one of sluice's own,
// marked or written before files were marked, still open.
func TestOpenBoltRefusesForeignFile(t *testing.T) {
	buckets := func(t *testing.T, path string) []string {
		t.Helper()
		db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true})
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		var names []string
		err = db.View(func(tx *bolt.Tx) error {
			return tx.ForEach(func(name []byte, _ *bolt.Bucket) error {
				names = append(names, string(name))
				return nil
			})
		})
		if err != nil {
			t.Fatal(err)
		}
		return names
	}
	// write makes <dir>/sluice.db a bbolt file with these buckets, each
	// holding one key.
	write := func(t *testing.T, names ...string) (dir, path string) {
		t.Helper()
		dir = t.TempDir()
		path = filepath.Join(dir, DBFile)
		db, err := bolt.Open(path, 0o600, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		err = db.Update(func(tx *bolt.Tx) error {
			for _, n := range names {
				b, err := tx.CreateBucket([]byte(n))
				if err != nil {
					return err
				}
				v := []byte("v")
				if n == "jobs" {
					v = []byte(`{"id":"j","state":"running","since":"2025-03-01T12:00:00Z","created":"2025-03-01T12:00:00Z"}`)
				}
				if err := b.Put([]byte("j"), v); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return dir, path
	}

	for name, foreign := range map[string][]string{
		"other buckets":                  {"users", "orders"},
		"other buckets and one of jobs":  {"jobs", "users"},
		"a bucket named like the marker": {"sluice"},
	} {
		t.Run(name, func(t *testing.T) {
			dir, path := write(t, foreign...)
			s, err := openBolt(dir, lockTestTimeout)
			if err == nil {
				s.Close()
				t.Fatalf("opened a bbolt file with buckets %q", foreign)
			}
			var oe *OpenError
			if !errors.As(err, &oe) || oe.Cause != "not a sluice state file" || oe.Path != path || !strings.Contains(err.Error(), path) {
				t.Fatalf("%v, want an OpenError naming %s, not a sluice state file", err, path)
			}
			if got := buckets(t, path); !slices.Equal(got, slices.Sorted(slices.Values(foreign))) {
				t.Errorf("buckets %q after the refusal, want %q unchanged", got, foreign)
			}
		})
	}

	t.Run("marked by a newer sluice", func(t *testing.T) {
		dir, path := write(t, "jobs")
		db, err := bolt.Open(path, 0o600, nil)
		if err != nil {
			t.Fatal(err)
		}
		err = db.Update(func(tx *bolt.Tx) error {
			b, err := tx.CreateBucket([]byte("sluice"))
			if err != nil {
				return err
			}
			return b.Put([]byte("format"), []byte("99"))
		})
		db.Close()
		if err != nil {
			t.Fatal(err)
		}
		s, err := openBolt(dir, lockTestTimeout)
		if err == nil {
			s.Close()
			t.Fatal("opened a file of format 99")
		}
		var oe *OpenError
		if !errors.As(err, &oe) || oe.Cause != "written by a newer sluice" || oe.Path != path {
			t.Fatalf("%v, want an OpenError naming %s, written by a newer sluice", err, path)
		}
	})
	t.Run("new", func(t *testing.T) {
		dir := t.TempDir()
		for range 2 { // made, then opened again
			s, err := OpenBolt(dir)
			if err != nil {
				t.Fatal(err)
			}
			if err := s.Put(Record{ID: "j"}); err != nil {
				t.Fatal(err)
			}
			s.Close()
		}
	})
	t.Run("unmarked sluice file", func(t *testing.T) {
		dir, _ := write(t, "jobs")
		for range 2 { // adopted and marked, then opened as marked
			s, err := OpenBolt(dir)
			if err != nil {
				t.Fatal(err)
			}
			recs, err := s.Load()
			s.Close()
			if err != nil || len(recs) != 1 || recs[0].ID != "j" || recs[0].State != Running {
				t.Fatalf("%+v %v, want the record kept", recs, err)
			}
		}
	})
}
