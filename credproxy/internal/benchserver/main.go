// Command benchserver is the load-test fixture of scripts/bench-proxy.sh:
// a Go upstream with small JSON and large streamed responses, and a bare
// httputil.ReverseProxy in front of it (the floor the credential proxy is
// compared against). It is not shipped.
package main

import (
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"strconv"
	"sync"
	"time"
)

func main() {
	mode := flag.String("mode", "upstream", "upstream, bare or bare-default")
	addr := flag.String("addr", "127.0.0.1:0", "listen address")
	up := flag.String("upstream", "", "upstream origin for -mode=bare")
	flag.Parse()
	var h http.Handler
	switch *mode {
	case "upstream":
		h = upstream()
	case "bare", "bare-default":
		u, err := url.Parse(*up)
		if err != nil || u.Host == "" {
			fmt.Fprintln(os.Stderr, "benchserver: -upstream must be an origin URL")
			os.Exit(2)
		}
		// The same transport tuning as the credential proxy, so the
		// difference measured is the proxy's own work.
		tr := &http.Transport{
			DialContext:         (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			MaxIdleConns:        512,
			MaxIdleConnsPerHost: 256,
			IdleConnTimeout:     30 * time.Second,
			DisableCompression:  true,
			ForceAttemptHTTP2:   true,
		}
		// Also the same pooled 128 KiB copy buffers: without a pool the
		// reverse proxy allocates 32 KiB per request, and the comparison
		// would credit the credential proxy for its pool instead of
		// measuring what lookup and rewriting cost.
		rp := &httputil.ReverseProxy{
			Rewrite:    func(pr *httputil.ProxyRequest) { pr.SetURL(u); pr.Out.Host = "" },
			Transport:  tr,
			BufferPool: newBufferPool(128 << 10),
		}
		if *mode == "bare-default" {
			// The floor exactly as issue 4 names it: a bare ReverseProxy
			// with its default (unpooled) buffers.
			rp.BufferPool = nil
		}
		h = rp
	default:
		fmt.Fprintln(os.Stderr, "benchserver: -mode must be upstream, bare or bare-default")
		os.Exit(2)
	}
	l, err := net.Listen("tcp", *addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "benchserver:", err)
		os.Exit(1)
	}
	fmt.Println(l.Addr().String())
	if err := http.Serve(l, h); err != nil {
		fmt.Fprintln(os.Stderr, "benchserver:", err)
		os.Exit(1)
	}
}

// bufferPool is the credential proxy's copy buffer pool.
type bufferPool struct{ p sync.Pool }

func newBufferPool(size int) *bufferPool {
	return &bufferPool{p: sync.Pool{New: func() any { b := make([]byte, size); return &b }}}
}

func (b *bufferPool) Get() []byte  { return *(b.p.Get().(*[]byte)) }
func (b *bufferPool) Put(x []byte) { b.p.Put(&x) }

func upstream() http.Handler {
	chunk := make([]byte, 64<<10)
	for i := range chunk {
		chunk[i] = byte('a' + i%26)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/json", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"id":"msg_01","type":"message","role":"assistant","content":[{"type":"text","text":"ok"}],"usage":{"input_tokens":12,"output_tokens":3}}`)
	})
	mux.HandleFunc("/big", func(w http.ResponseWriter, r *http.Request) {
		n, _ := strconv.Atoi(r.URL.Query().Get("mb"))
		if n <= 0 {
			n = 100
		}
		total := n << 20
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Length", strconv.Itoa(total))
		for sent := 0; sent < total; sent += len(chunk) {
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
	})
	return mux
}
