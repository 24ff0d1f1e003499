package bgp

import (
	"errors"
	"fmt"
	"sort"

	"github.com/go-logr/logr"
	gobgplog "github.com/osrg/gobgp/v3/pkg/log"
)

// debugV is the logr verbosity at which GoBGP's debug messages are
// written; below it GoBGP reports Info as its level and so skips building
// most of them.
const debugV = 4

// logger adapts GoBGP's logger interface to logr. GoBGP's Warn is logr's
// Info at V(0), its Info V(1) (peer up and down, peer added), its Debug
// V(4). Panic and Fatal, which GoBGP uses for a broken invariant, log an
// error and panic: a library must not exit the process.
type logger struct{ l logr.Logger }

var _ gobgplog.Logger = logger{}

func (g logger) Panic(msg string, fields gobgplog.Fields) {
	g.l.Error(fieldErr(fields), msg, kv(fields)...)
	panic("gobgp: " + msg)
}

func (g logger) Fatal(msg string, fields gobgplog.Fields) {
	g.l.Error(fieldErr(fields), msg, kv(fields)...)
	panic("gobgp: " + msg)
}

func (g logger) Error(msg string, fields gobgplog.Fields) {
	g.l.Error(fieldErr(fields), msg, kv(fields)...)
}

func (g logger) Warn(msg string, fields gobgplog.Fields) { g.l.Info(msg, kv(fields)...) }

func (g logger) Info(msg string, fields gobgplog.Fields) { g.l.V(1).Info(msg, kv(fields)...) }

func (g logger) Debug(msg string, fields gobgplog.Fields) {
	g.l.V(debugV).Info(msg, kv(fields)...)
}

// SetLevel is ignored: the logr sink decides.
func (logger) SetLevel(gobgplog.LogLevel) {}

func (g logger) GetLevel() gobgplog.LogLevel {
	if g.l.V(debugV).Enabled() {
		return gobgplog.DebugLevel
	}
	return gobgplog.InfoLevel
}

// kv turns GoBGP's fields into logr's key-value pairs, in key order.
func kv(fields gobgplog.Fields) []any {
	keys := make([]string, 0, len(fields))
	for k := range fields {
		if k == gobgplog.FieldFacility {
			continue
		}
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := make([]any, 0, 2*len(keys))
	for _, k := range keys {
		v := fields[k]
		if s, ok := v.(fmt.Stringer); ok {
			v = s.String()
		}
		out = append(out, k, v)
	}
	return out
}

// fieldErr is the error GoBGP put in an "Error" or "Err" field, or one made
// of the field's text.
func fieldErr(fields gobgplog.Fields) error {
	for _, k := range []string{"Error", "Err"} {
		switch v := fields[k].(type) {
		case nil:
		case error:
			return v
		default:
			return errors.New(fmt.Sprint(v))
		}
	}
	return nil
}
