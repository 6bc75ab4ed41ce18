package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// The systemd notify protocol (sd_notify(3)): a service started with Type=notify tells the
// service manager its state by sending datagrams of newline-separated VAR=value assignments to
// the AF_UNIX datagram socket named by $NOTIFY_SOCKET. systemd marks the unit started only on
// READY=1, so "systemctl start" and units ordered after scoregate wait until it serves.

// errNotifySocket marks a NOTIFY_SOCKET this gateway cannot speak to.
var errNotifySocket = errors.New("unsupported NOTIFY_SOCKET")

// sdNotify sends state (for example "READY=1") to the service manager over $NOTIFY_SOCKET. It
// does nothing when the variable is unset, as it is outside systemd or under a Type= other than
// notify. A name starting with '@' is an abstract socket (Go's net package turns the '@' into the
// leading NUL byte of the Linux abstract namespace); any other name must be an absolute path.
func sdNotify(state string) error {
	name := os.Getenv("NOTIFY_SOCKET")
	if name == "" {
		return nil
	}
	if name[0] != '/' && name[0] != '@' {
		return fmt.Errorf("%w %q: want an absolute path or an @abstract name", errNotifySocket, name)
	}
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		return fmt.Errorf("notifying the service manager: %w", err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte(state)); err != nil {
		return fmt.Errorf("notifying the service manager: %w", err)
	}
	return nil
}

// notifyReady says that the gateway serves: both listeners accept connections. Send it once at
// start, after the listeners are open.
func notifyReady() error { return sdNotify("READY=1\nSTATUS=serving") }

// notifyStopping says that shutdown has begun (SIGTERM or SIGINT received), before the drain.
func notifyStopping() error { return sdNotify("STOPPING=1") }

// notifyReloading says that a configuration reload has begun. MONOTONIC_USEC lets systemd tell
// this reload from an earlier one; Type=notify-reload (systemd 253 and later) requires it. Follow
// it with notifyReloaded when the reload is done, whether it succeeded or not.
func notifyReloading() error {
	usec, err := monotonicUsec()
	if err != nil {
		return err
	}
	return sdNotify("RELOADING=1\nMONOTONIC_USEC=" + strconv.FormatInt(usec, 10))
}

// notifyReloaded says that a reload has finished and the gateway serves again.
func notifyReloaded() error { return sdNotify("READY=1") }

// monotonicUsec is CLOCK_MONOTONIC in microseconds, the clock systemd compares MONOTONIC_USEC
// with. (Go's own monotonic readings count from the process's start, so they cannot be used.)
func monotonicUsec() (int64, error) {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return 0, fmt.Errorf("reading CLOCK_MONOTONIC: %w", err)
	}
	return ts.Nano() / 1000, nil
}
