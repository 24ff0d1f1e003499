// Package bench holds the scale benchmarks of issue 6: kubelvs's syncer
// against `ipvsadm -R` and the kube-proxy IPVS pattern on the identical rule
// set, in a guest kernel. The benchmarks live in the _test.go files and opt
// in with kerneltest.Require, so they run only inside the guest
// (hack/bench.sh); BENCHMARKS.md explains what each figure measures.
package bench
