package main

import (
	"math"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestCheckFlags(t *testing.T) {
	ok := func(mode string) (string, float64, int, time.Duration, time.Duration, int) {
		return mode, 200, 64, 10 * time.Second, 3 * time.Second, 8
	}
	for _, mode := range []string{"steps", "independent"} {
		if err := checkFlags(ok(mode)); err != nil {
			t.Errorf("defaults, -mode %s: %v", mode, err)
		}
	}
	for _, tc := range []struct {
		flag string
		err  error
	}{
		{"-mode", checkFlags("foo", 200, 64, 10*time.Second, 3*time.Second, 8)},
		{"-capacity", checkFlags("steps", -5, 64, 10*time.Second, 3*time.Second, 8)},
		{"-capacity", checkFlags("steps", math.NaN(), 64, 10*time.Second, 3*time.Second, 8)},
		{"-capacity", checkFlags("steps", math.Inf(1), 64, 10*time.Second, 3*time.Second, 8)},
		{"-writers", checkFlags("steps", 200, 0, 10*time.Second, 3*time.Second, 8)},
		{"-phase", checkFlags("steps", 200, 64, 0, 0, 8)},
		{"-settle", checkFlags("steps", 200, 64, 10*time.Second, -time.Second, 8)},
		{"-settle", checkFlags("steps", 200, 64, 10*time.Second, 30*time.Second, 8)},
		{"-n", checkFlags("independent", 200, 64, 10*time.Second, 3*time.Second, 1)},
		{"-log-level", checkLogFlags("verbose", "")},
		{"-logs", checkLogFlags("debug", filepath.Join(t.TempDir(), "missing"))},
	} {
		if tc.err == nil || !strings.HasPrefix(tc.err.Error(), tc.flag+" ") {
			t.Errorf("want an error naming %s, got %v", tc.flag, tc.err)
		}
	}
	if err := checkLogFlags("DEBUG", t.TempDir()); err != nil {
		t.Errorf("-log-level DEBUG -logs <a directory>: %v", err)
	}
	// -n only matters in independent mode.
	if err := checkFlags("steps", 200, 64, 10*time.Second, 3*time.Second, 0); err != nil {
		t.Errorf("-mode steps -n 0: %v", err)
	}
}
