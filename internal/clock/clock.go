// Package clock owns the time source. It is the only package that calls
// time.Now, so that every expiry, lockout and schedule can be driven by a
// test clock instead of sleeping.
package clock

import "time"

// Clock tells the time.
type Clock interface {
	Now() time.Time
}

// Real is the wall clock, in UTC.
type Real struct{}

// Now returns the current UTC time truncated to microseconds: both stores
// keep microseconds, and the audit hash must cover exactly what is stored.
func (Real) Now() time.Time { return time.Now().UTC().Truncate(time.Microsecond) }

// Since is time elapsed on the wall clock, for metrics and benchmarks only.
func Since(t time.Time) time.Duration { return time.Since(t) }
