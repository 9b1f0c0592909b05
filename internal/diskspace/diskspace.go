// Package diskspace measures the free space of a filesystem, for the disk
// floors of export (the reserve), ingest (the pause) and the embedded
// NATS server (its storage limit). It is a pure leaf: stdlib only.
package diskspace
