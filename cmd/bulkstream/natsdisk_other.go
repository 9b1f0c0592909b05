//go:build !(linux || darwin || freebsd)

package main

import "errors"

// statfsAvail cannot measure free space on this OS: the embedded NATS
// disk guard leaves the JetStream limits alone.
func statfsAvail(string) (int64, error) {
	return 0, errors.New("free disk space cannot be measured on this OS")
}
