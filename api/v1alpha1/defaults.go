package v1alpha1

// The defaults of the API, in one place. The API server applies them from
// the CRD's +kubebuilder:default markers; code that reads an object the API
// server did not default (tests, the agent's script tests, a hand-built
// object) applies these. TestDefaultsMatchTheCRD fails when a marker and
// its constant disagree, or a default has no constant.
const (
	DefaultScheduler     = SchedulerRoundRobin
	DefaultForwarding    = ForwardingMasquerade
	DefaultTrafficPolicy = TrafficPolicyCluster
	DefaultProtocol      = ProtocolTCP
	DefaultStaticWeight  = 1

	DefaultDrainTimeoutSeconds = 60

	DefaultPersistenceTimeoutSeconds = 300
	DefaultIPv4PrefixLength          = 32
	DefaultIPv6PrefixLength          = 128

	DefaultHealthProtocol        = HealthCheckTCP
	DefaultHealthIntervalSeconds = 5
	DefaultHealthTimeoutSeconds  = 2
	DefaultHealthRise            = 2
	DefaultHealthFall            = 3

	DefaultPoolAutoAssign = true
)
