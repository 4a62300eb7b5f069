package shield

// StateDir is this container's shield state directory, where its resolver
// writes refused.jsonl and the runner its audit.jsonl (docs/shield.md,
// Refused traffic: shield log and shield watch).
func (s *Shield) StateDir() (string, error) { return s.stateDir() }
