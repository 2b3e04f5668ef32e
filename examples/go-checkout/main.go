// checkout: a small Go HTTP service for the profiler's worked example (see README.md).
//
// Every request gets a span: its trace ID comes from the W3C `traceparent` header, or is made
// up when there is none, and the handler runs under pprof.Do with `trace_id`, `span_id` and
// `http.route` labels, the labels the profiler ties samples to traces by.
//
// GET /orders is deliberately slow: it looks up each order's customer one at a time by
// scanning the whole customer table (the N+1 pattern), and encodes every order to JSON twice
// over before writing the answer. Started with -fix it indexes the customers once and encodes
// once. Standard library only.
package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"net/http"
	"runtime/pprof"
	"strings"
)

type customer struct {
	ID   int    `json:"id"`
	Name string `json:"name"`
}

type order struct {
	ID       int       `json:"id"`
	Customer *customer `json:"customer"`
	Total    int       `json:"total"`
}

type store struct {
	customers []customer
	orders    []order
	byID      map[int]*customer
}

func newStore(customers, orders int) *store {
	s := &store{byID: make(map[int]*customer, customers)}
	for i := 0; i < customers; i++ {
		s.customers = append(s.customers, customer{ID: i, Name: fmt.Sprintf("customer-%d", i)})
	}
	for i := range s.customers {
		s.byID[s.customers[i].ID] = &s.customers[i]
	}
	for i := 0; i < orders; i++ {
		// Customers near the end of the table: each lookup scans most of it.
		s.orders = append(s.orders, order{ID: i, Total: i * 7 % 1000})
	}
	return s
}

// customerByID is the N+1 lookup: one scan of the whole table per order.
//
//go:noinline
func (s *store) customerByID(id int) *customer {
	for i := range s.customers {
		if s.customers[i].ID == id {
			return &s.customers[i]
		}
	}
	return nil
}

// loadOrdersSlow fills in each order's customer with one lookup per order.
func (s *store) loadOrdersSlow() []order {
	out := make([]order, len(s.orders))
	for i, o := range s.orders {
		o.Customer = s.customerByID(len(s.customers) - 1 - i%100)
		out[i] = o
	}
	return out
}

// loadOrdersFast uses the index built once at start.
func (s *store) loadOrdersFast() []order {
	out := make([]order, len(s.orders))
	for i, o := range s.orders {
		o.Customer = s.byID[len(s.customers)-1-i%100]
		out[i] = o
	}
	return out
}

// encodeWasteful encodes every order alone, decodes it back and encodes the list again.
//
//go:noinline
func encodeWasteful(orders []order) []byte {
	var copies []order
	for _, o := range orders {
		one, _ := json.Marshal(o)
		var back order
		_ = json.Unmarshal(one, &back)
		copies = append(copies, back)
	}
	body, _ := json.Marshal(copies)
	return body
}

type server struct {
	store *store
	fix   bool
}

// handleOrders is GET /orders.
func (srv *server) handleOrders(w http.ResponseWriter, _ *http.Request) {
	var body []byte
	if srv.fix {
		body, _ = json.Marshal(srv.store.loadOrdersFast())
	} else {
		body = encodeWasteful(srv.store.loadOrdersSlow())
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(body)
}

// handleHealth is GET /health.
func (srv *server) handleHealth(w http.ResponseWriter, _ *http.Request) {
	_, _ = w.Write([]byte("ok\n"))
}

// traced runs a handler under a span: the trace ID of `traceparent` (W3C: 00-<32 hex>-<16
// hex>-<2 hex>) or a new one, a new span ID, and the route, as pprof labels.
func traced(route string, handler http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		traceID := parentTraceID(r.Header.Get("traceparent"))
		if traceID == "" {
			traceID = randomHex(16)
		}
		spanID := randomHex(8)
		w.Header().Set("traceparent", "00-"+traceID+"-"+spanID+"-01")
		labels := pprof.Labels("trace_id", traceID, "span_id", spanID, "http.route", route)
		pprof.Do(r.Context(), labels, func(context.Context) { handler(w, r) })
	}
}

// parentTraceID is the trace ID of a valid traceparent header, lowercase, or "".
func parentTraceID(header string) string {
	parts := strings.Split(strings.TrimSpace(header), "-")
	if len(parts) != 4 || len(parts[1]) != 32 {
		return ""
	}
	id, err := hex.DecodeString(parts[1])
	if err != nil || bytes.Equal(id, make([]byte, 16)) {
		return ""
	}
	return hex.EncodeToString(id)
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func main() {
	address := flag.String("address", "127.0.0.1:8090", "where to listen")
	fix := flag.Bool("fix", false, "index customers and encode once (the fix)")
	customers := flag.Int("customers", 200000, "customers in the table")
	orders := flag.Int("orders", 300, "orders per answer")
	flag.Parse()

	srv := &server{store: newStore(*customers, *orders), fix: *fix}
	mux := http.NewServeMux()
	mux.HandleFunc("/orders", traced("/orders", srv.handleOrders))
	mux.HandleFunc("/health", traced("/health", srv.handleHealth))
	log.Printf("checkout listening on http://%s (fix: %v)", *address, *fix)
	log.Fatal(http.ListenAndServe(*address, mux))
}
