package index

import "github.com/prometheus/client_golang/prometheus"

// collector exports the index's state at scrape time: counts by type, the
// applied sequence and clock, and a few Pebble internals from db.Metrics().
type collector struct {
	x *Index

	resources, tombstones, appliedSeq, clock *prometheus.Desc
	diskUsage, readAmp, memtableSize         *prometheus.Desc
	compactions, cacheHits, cacheMisses      *prometheus.Desc
}

func newCollector(x *Index) *collector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("bulkstream_index_"+name, help, labels, nil)
	}
	return &collector{
		x:            x,
		resources:    d("resources", "Current (not deleted) resources in the index.", "type"),
		tombstones:   d("tombstones", "Tombstones of deleted resources in the index.", "type"),
		appliedSeq:   d("applied_sequence", "Last JetStream stream sequence committed to the index."),
		clock:        d("commit_clock_seconds", "Last commit time handed out by the commit clock, in Unix seconds."),
		diskUsage:    d("pebble_disk_usage_bytes", "Disk space used by the Pebble store."),
		readAmp:      d("pebble_read_amplification", "Pebble read amplification (sublevels plus L0 files in the worst case)."),
		memtableSize: d("pebble_memtable_size_bytes", "Bytes allocated by Pebble memtables."),
		compactions:  d("pebble_compactions_total", "Pebble compactions run since the store was opened."),
		cacheHits:    d("pebble_cache_hits_total", "Pebble block cache hits."),
		cacheMisses:  d("pebble_cache_misses_total", "Pebble block cache misses."),
	}
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.resources, c.tombstones, c.appliedSeq, c.clock,
		c.diskUsage, c.readAmp, c.memtableSize, c.compactions, c.cacheHits, c.cacheMisses} {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	x := c.x
	// Not the commit lock: a scrape never waits for a batch being synced.
	if err := x.rlockDB(); err != nil {
		return
	}
	m := x.db.Metrics()
	x.dbMu.RUnlock()
	p := x.pub.Load()
	counts, seq, clock := p.counts, p.appliedSeq, p.clock
	for _, tc := range counts {
		ch <- prometheus.MustNewConstMetric(c.resources, prometheus.GaugeValue, float64(tc.Resources), tc.Type)
		ch <- prometheus.MustNewConstMetric(c.tombstones, prometheus.GaugeValue, float64(tc.Tombstones), tc.Type)
	}
	ch <- prometheus.MustNewConstMetric(c.appliedSeq, prometheus.GaugeValue, float64(seq))
	ch <- prometheus.MustNewConstMetric(c.clock, prometheus.GaugeValue, float64(clock)/1e6)
	ch <- prometheus.MustNewConstMetric(c.diskUsage, prometheus.GaugeValue, float64(m.DiskSpaceUsage()))
	ch <- prometheus.MustNewConstMetric(c.readAmp, prometheus.GaugeValue, float64(m.ReadAmp()))
	ch <- prometheus.MustNewConstMetric(c.memtableSize, prometheus.GaugeValue, float64(m.MemTable.Size))
	ch <- prometheus.MustNewConstMetric(c.compactions, prometheus.CounterValue, float64(m.Compact.Count))
	ch <- prometheus.MustNewConstMetric(c.cacheHits, prometheus.CounterValue, float64(m.BlockCache.Hits))
	ch <- prometheus.MustNewConstMetric(c.cacheMisses, prometheus.CounterValue, float64(m.BlockCache.Misses))
}
