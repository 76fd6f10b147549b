package judge

import "math"

// betCap bounds a bet to this fraction of the largest stake that cannot
// lose everything: if every event of a second lands on the "wrong" arm the
// wealth is multiplied by 1-betCap, never by zero.
const betCap = 0.9

// wealthCap is where a wealth process stops betting. Stopping a bet is
// always allowed (the stopped process is still a supermartingale), and it
// keeps every number finite so that the state stays JSON-encodable.
const wealthCap = 1e100

// share is the candidate's expected share of one second's events when the
// candidate's event rate is ratio times the baseline's: ratio*nc/(ratio*nc+nb).
func share(ratio, nc, nb float64) float64 {
	return ratio * nc / (ratio*nc + nb)
}

// betUp returns the factor by which a wealth betting that the candidate's
// share of events exceeds pNull is multiplied after a second in which y of
// e events were the candidate's. The bet is tuned to the share pAlt.
//
// The factor is 1 + lambda*(y/e - pNull) with 0 <= lambda <= betCap/pNull.
// Whenever E[y | e] <= pNull*e (the null hypothesis, whatever the
// dependence between the e events), its expectation is at most 1 and it is
// never negative, so a product of such factors is a test supermartingale.
//
// lambda is e times the Kelly bet for a single event, capped: for e = 1 the
// factor equals the binomial likelihood ratio pAlt/pNull (or
// (1-pAlt)/(1-pNull)).
func betUp(y, e, pNull, pAlt float64) float64 {
	if e <= 0 || pAlt <= pNull || pNull <= 0 || pNull >= 1 {
		return 1
	}
	single := (pAlt - pNull) / (pNull * (1 - pNull))
	lambda := math.Min(e*single, betCap/pNull)
	return 1 + lambda*(y/e-pNull)
}

// betDown is betUp for the opposite direction: it bets that the
// candidate's share falls below pNull, tuned to pAlt < pNull.
func betDown(y, e, pNull, pAlt float64) float64 {
	return betUp(e-y, e, 1-pNull, 1-pAlt)
}

// grow multiplies w by f, freezing w once it reaches wealthCap.
func grow(w, f float64) float64 {
	if w >= wealthCap {
		return w
	}
	w *= f
	if w > wealthCap {
		return wealthCap
	}
	return w
}
