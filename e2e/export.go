package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Sample is one stored sample: its timestamp in milliseconds and its value.
type Sample struct {
	TS    int64
	Value float64
}

// Stored is what VictoriaMetrics' /api/v1/export returned for a selector:
// every raw sample of every series, duplicates kept. Series are keyed by
// SeriesKey of their labels, __name__ included. The export format allows a
// series to span several lines; they are merged.
type Stored struct {
	Series map[string][]Sample
}

// Samples is the number of raw samples, duplicates included.
func (s *Stored) Samples() int {
	n := 0
	for _, ss := range s.Series {
		n += len(ss)
	}
	return n
}

// Distinct is the number of distinct (series, timestamp) pairs.
func (s *Stored) Distinct() int {
	n := 0
	for _, ss := range s.Series {
		seen := make(map[int64]struct{}, len(ss))
		for _, x := range ss {
			seen[x.TS] = struct{}{}
		}
		n += len(seen)
	}
	return n
}

// SeriesKey is the canonical form of a label set: name=value pairs sorted
// by name, comma-separated, values quoted as Go strings.
func SeriesKey(labels map[string]string) string {
	names := make([]string, 0, len(labels))
	for k := range labels {
		names = append(names, k)
	}
	slices.Sort(names)
	var b strings.Builder
	for i, k := range names {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(k)
		b.WriteByte('=')
		b.WriteString(strconv.Quote(labels[k]))
	}
	return b.String()
}

// exportLine is one line of /api/v1/export.
type exportLine struct {
	Metric     map[string]string `json:"metric"`
	Values     []float64         `json:"values"`
	Timestamps []int64           `json:"timestamps"`
}

// ParseExport reads the JSON lines of /api/v1/export.
func ParseExport(r io.Reader) (*Stored, error) {
	s := &Stored{Series: map[string][]Sample{}}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 1<<20), 256<<20)
	for n := 1; sc.Scan(); n++ {
		line := sc.Bytes()
		if len(strings.TrimSpace(string(line))) == 0 {
			continue
		}
		var l exportLine
		if err := json.Unmarshal(line, &l); err != nil {
			return nil, fmt.Errorf("e2e: export line %d: %w", n, err)
		}
		if len(l.Values) != len(l.Timestamps) {
			return nil, fmt.Errorf("e2e: export line %d: %d values but %d timestamps", n, len(l.Values), len(l.Timestamps))
		}
		key := SeriesKey(l.Metric)
		for i, ts := range l.Timestamps {
			s.Series[key] = append(s.Series[key], Sample{TS: ts, Value: l.Values[i]})
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("e2e: reading export: %w", err)
	}
	return s, nil
}

// Export reads every sample matching the series selector match with a
// timestamp in [start, end] from the VictoriaMetrics at baseURL
// (http://host:port).
func Export(ctx context.Context, client *http.Client, baseURL, match string, start, end time.Time) (*Stored, error) {
	q := url.Values{
		"match[]": {match},
		"start":   {strconv.FormatInt(start.Unix(), 10)},
		"end":     {strconv.FormatInt(end.Unix()+1, 10)},
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, baseURL+"/api/v1/export?"+q.Encode(), nil)
	if err != nil {
		return nil, fmt.Errorf("e2e: export %s: %w", match, err)
	}
	if client == nil {
		client = http.DefaultClient
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("e2e: export %s: %w", match, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return nil, fmt.Errorf("e2e: export %s: status %d: %s", match, resp.StatusCode, strings.TrimSpace(string(msg)))
	}
	return ParseExport(resp.Body)
}

// Check compares what a store holds for a Loader's job with what the
// Loader's Run acknowledged. Counts are of samples.
type Check struct {
	Acked      int64 // acknowledged by the store to the loader
	Stored     int64 // raw samples stored for the job, duplicates included
	Missing    int64 // acknowledged, not stored
	Duplicates int64 // extra copies of a stored sample
	Unacked    int64 // stored although the loader never saw it acknowledged
	Foreign    int64 // stored with a series, timestamp or value the loader never wrote
}

// Exact reports whether every acknowledged sample is stored exactly once
// and nothing else is.
func (c Check) Exact() bool {
	return c.Missing == 0 && c.Duplicates == 0 && c.Unacked == 0 && c.Foreign == 0 && c.Stored == c.Acked
}

func (c Check) String() string {
	return fmt.Sprintf("acked=%d stored=%d missing=%d duplicates=%d unacked=%d foreign=%d",
		c.Acked, c.Stored, c.Missing, c.Duplicates, c.Unacked, c.Foreign)
}

// Check compares s, the export of l's job, with res, the result of l.Run.
func (l *Loader) Check(res Result, s *Stored) Check {
	c := Check{Acked: res.AckedSamples, Stored: int64(s.Samples())}
	perWriter := l.Batches * l.BatchSize
	start := l.Start.UnixMilli()
	known := 0
	for w := range l.Writers {
		labels := l.Series(w)
		labels["__name__"] = MetricName
		samples, ok := s.Series[SeriesKey(labels)]
		if ok {
			known++
		}
		copies := make([]int32, perWriter)
		for _, x := range samples {
			i := x.TS - start
			if i < 0 || i >= int64(perWriter) || x.Value != float64(i) {
				c.Foreign++
				continue
			}
			copies[i]++
		}
		for i, n := range copies {
			acked := w < len(res.Acked) && res.Acked[w][i/l.BatchSize]
			switch {
			case n == 0 && acked:
				c.Missing++
			case n > 1:
				c.Duplicates += int64(n - 1)
			}
			if n > 0 && !acked {
				c.Unacked++
			}
		}
	}
	if known < len(s.Series) {
		for key, samples := range s.Series {
			if !l.ownsSeries(key) {
				c.Foreign += int64(len(samples))
			}
		}
	}
	return c
}

func (l *Loader) ownsSeries(key string) bool {
	for w := range l.Writers {
		labels := l.Series(w)
		labels["__name__"] = MetricName
		if SeriesKey(labels) == key {
			return true
		}
	}
	return false
}
