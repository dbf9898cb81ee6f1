package storesim_test

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"time"

	"github.com/sluice-dev/sluice/internal/storesim"
)

// A store on loopback, as `sluice demo` runs one: capacity changed at run
// time, then an outage that refuses every write.
func ExampleNewServer() {
	store, err := storesim.NewServer(storesim.Config{
		Style:       storesim.StyleS3,
		Schedule:    storesim.Constant(1000), // requests/s
		BaseLatency: time.Millisecond,
	})
	if err != nil {
		panic(err)
	}
	defer store.Close()
	srv := httptest.NewServer(store)
	defer srv.Close()

	put := func() {
		resp, err := srv.Client().Post(srv.URL+"/bucket/key", "application/octet-stream", strings.NewReader("data"))
		if err != nil {
			panic(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		code := ""
		if i := strings.Index(string(body), "<Code>"); i >= 0 {
			code = string(body[i+6 : i+6+strings.Index(string(body[i+6:]), "<")])
		}
		fmt.Println(strings.TrimSpace(fmt.Sprint(resp.StatusCode, " ", code)))
	}
	put()
	store.SetCapacityNow(0) // nothing fits any more
	put()
	store.SetCapacityNow(1000)
	store.SetOutage(storesim.Refuse) // throttle everything whatever the capacity
	put()

	st := store.StatsNow()
	fmt.Println(st.Attempts, st.Accepted, st.Throttled, st.Outage)
	// Output:
	// 200
	// 503 SlowDown
	// 503 SlowDown
	// 3 1 2 refuse
}

// The in-process transport serves a client without sockets; under
// testing/synctest it runs on virtual time.
func ExampleServer_Transport() {
	store, err := storesim.NewServer(storesim.Config{Style: storesim.StyleDynamoDB, Schedule: storesim.Constant(1), Burst: time.Second})
	if err != nil {
		panic(err)
	}
	client := &http.Client{Transport: store.Transport()}
	for range 2 {
		resp, err := client.Post("http://dynamodb.test/", "application/x-amz-json-1.0", strings.NewReader(`{"TableName":"t"}`))
		if err != nil {
			panic(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		fmt.Println(resp.StatusCode, len(body) > 2 && strings.Contains(string(body), "ProvisionedThroughputExceededException"))
	}
	// Output:
	// 200 false
	// 400 true
}
