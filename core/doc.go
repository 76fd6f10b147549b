// Package core is the pure domain of Sluice: rollout specs and their
// validation, immutable revisions, routing state applied by agents, and the
// strategy decision functions that workflows execute.
//
// Nothing under core performs I/O, reads a clock or draws random numbers:
// callers pass "now" and observations in, decisions come out. Core imports
// only the standard library; TestNoForbiddenImports enforces it.
package core
