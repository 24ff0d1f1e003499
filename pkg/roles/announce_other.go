//go:build !linux

package roles

import (
	"errors"
	"net/netip"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/kubelvs/kubelvs/pkg/announce"
)

func defaultRoute() (string, netip.Addr, netip.Addr, error) {
	return "", netip.Addr{}, netip.Addr{}, errors.New("announcement needs Linux")
}

func newLayer2(string, logr.Logger, prometheus.Registerer) (announce.Layer2, error) {
	return nil, errors.New("layer-2 announcement needs Linux")
}
