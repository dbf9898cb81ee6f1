package main

import (
	"strings"
	"testing"
	"time"
)

func TestCheckFlags(t *testing.T) {
	if err := checkFlags(32, 3*time.Second, 3, 256, 4<<20); err != nil {
		t.Errorf("defaults: %v", err)
	}
	for _, tc := range []struct {
		flag string
		err  error
	}{
		{"-writers", checkFlags(0, 3*time.Second, 3, 256, 4<<20)},
		{"-round", checkFlags(32, 0, 3, 256, 4<<20)},
		{"-rounds", checkFlags(32, 3*time.Second, 0, 256, 4<<20)},
		{"-uploads", checkFlags(32, 3*time.Second, 3, 0, 4<<20)},
		{"-upload-size", checkFlags(32, 3*time.Second, 3, 256, -1)},
	} {
		if tc.err == nil || !strings.HasPrefix(tc.err.Error(), tc.flag+" ") {
			t.Errorf("want an error naming %s, got %v", tc.flag, tc.err)
		}
	}
}
