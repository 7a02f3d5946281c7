/// What a state machine returns for one event: I/O for the monitor to carry out, in order, and what happened,
/// for metrics and logs.
public struct MachineOutput<Action: Equatable & Sendable, Observation: Equatable & Sendable>: Equatable, Sendable {
    public var actions: [Action] = []
    public var observations: [Observation] = []

    public init(actions: [Action] = [], observations: [Observation] = []) {
        self.actions = actions
        self.observations = observations
    }
}
