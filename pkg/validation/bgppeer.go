package validation

import (
	"fmt"
	"regexp"
	"time"

	"k8s.io/apimachinery/pkg/util/validation/field"

	lvsv1 "github.com/kubelvs/kubelvs/api/v1alpha1"
)

var (
	secretName = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)
	secretKey  = regexp.MustCompile(`^[-._a-zA-Z0-9]+$`)
)

// BGPPeer returns everything that is wrong with a BGPPeer, each naming its
// field; empty means the agents can keep a session with it. It repeats
// every rule of the CRD and adds the syntax of nodeSelector.matchLabels
// keys, which the CRD cannot afford.
func BGPPeer(p *lvsv1.BGPPeer) field.ErrorList {
	spec := &p.Spec
	sp := field.NewPath("spec")
	var errs field.ErrorList
	if _, err := Address(string(spec.PeerAddress)); err != nil {
		errs = append(errs, field.Invalid(sp.Child("peerAddress"), short(string(spec.PeerAddress)), err.Error()))
	}
	if spec.PeerPort != nil {
		errs = append(errs, between(sp.Child("peerPort"), *spec.PeerPort, 1, 65535)...)
	}
	errs = append(errs, asn(spec.PeerASN, sp.Child("peerASN"))...)
	errs = append(errs, asn(spec.MyASN, sp.Child("myASN"))...)
	if h := spec.HoldTime; h != nil && h.Duration != 0 && (h.Duration < 3*time.Second || h.Duration > 65535*time.Second) {
		errs = append(errs, field.Invalid(sp.Child("holdTime"), h.Duration.String(), "must be 0s (no keepalives) or from 3s to 65535s (RFC 4271)"))
	}
	if s := spec.NodeSelector; s != nil {
		errs = append(errs, LabelSelector(s, sp.Child("nodeSelector"))...)
	}
	if r := spec.PasswordSecretRef; r != nil {
		rp := sp.Child("passwordSecretRef")
		if len(r.Name) == 0 || len(r.Name) > 253 || !secretName.MatchString(r.Name) {
			errs = append(errs, field.Invalid(rp.Child("name"), short(r.Name), "must be a Secret's name (a DNS subdomain)"))
		}
		if len(r.Key) == 0 || len(r.Key) > 253 || !secretKey.MatchString(r.Key) {
			errs = append(errs, field.Invalid(rp.Child("key"), short(r.Key), "must be a key of a Secret's data (letters, digits, '-', '_', '.')"))
		}
	}
	return errs
}

func asn(v lvsv1.ASN, p *field.Path) field.ErrorList {
	switch {
	case v < 1 || v > 4294967295:
		return field.ErrorList{field.Invalid(p, int64(v), "must be from 1 to 4294967295")}
	case v == 23456:
		return field.ErrorList{field.Invalid(p, int64(v), fmt.Sprintf("%d is AS_TRANS, reserved (RFC 6793)", v))}
	}
	return nil
}
