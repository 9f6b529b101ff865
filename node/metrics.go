package node

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// metrics are the node's Prometheus series. Counters kept by the packages
// themselves (netpoll, raftlog) are read through CounterFunc/GaugeFunc at
// scrape time, so the hot paths only touch their own atomics.
type metrics struct {
	reg *prometheus.Registry

	requests        *prometheus.CounterVec // by request type
	requestErrors   *prometheus.CounterVec // by error code
	deliveryLatency prometheus.Histogram
	deliveries      prometheus.Counter
	eventsPublished prometheus.Counter
	sendsExpired    prometheus.Counter
	expirySweeps    prometheus.Counter
	authThrottled   *prometheus.CounterVec // by endpoint
	minIndexWaits   prometheus.Counter
}

func newMetrics() *metrics {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m := &metrics{
		reg: reg,
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "parley_requests_total", Help: "Client requests received, by type.",
		}, []string{"type"}),
		requestErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "parley_request_errors_total", Help: "Error replies sent, by code.",
		}, []string{"code"}),
		deliveryLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "parley_delivery_seconds", Help: "From the leader's timestamp on an entry to its events being queued for local connections.",
			Buckets: prometheus.ExponentialBuckets(100e-6, 2, 16),
		}),
		deliveries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "parley_deliveries_total", Help: "Event frames queued to local connections.",
		}),
		eventsPublished: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "parley_events_total", Help: "Conversation events published by the state machine.",
		}),
		sendsExpired: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "parley_sends_expired_total", Help: "Dedup records of old sends deleted by this node's expiry commands (leader only).",
		}),
		expirySweeps: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "parley_send_expiry_sweeps_total", Help: "Expiry commands for old dedup records applied (leader only).",
		}),
		authThrottled: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "parley_auth_throttled_total", Help: "Logins and registrations refused with 429 rate_limited (AuthLimits), by endpoint.",
		}, []string{"endpoint"}),
		minIndexWaits: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "parley_min_index_waits_total", Help: "Reads that waited for this node to apply their min_idx (or a leader's read index).",
		}),
	}
	reg.MustRegister(m.requests, m.requestErrors,
		m.deliveryLatency, m.deliveries, m.eventsPublished, m.sendsExpired, m.expirySweeps, m.authThrottled, m.minIndexWaits)
	return m
}
