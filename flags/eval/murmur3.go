package eval

import "math/bits"

// murmur3 computes MurmurHash3 x86_32 (Austin Appleby's reference
// MurmurHash3_x86_32) incrementally, so that a bucketing key made of several
// parts (flag key + targeting key, or the parts of a "cat") can be hashed
// without first concatenating them into a new string.
//
// The zero value hashes with seed 0, which is what flagd's fractional
// operator uses.
type murmur3 struct {
	h     uint32
	tail  uint32 // pending bytes, little-endian, ntail of them
	ntail uint8
	n     uint32 // total length in bytes (mod 2^32, as in the reference)
}

const (
	murmurC1 = 0xcc9e2d51
	murmurC2 = 0x1b873593
)

func murmurMixK(k uint32) uint32 {
	k *= murmurC1
	k = bits.RotateLeft32(k, 15)
	return k * murmurC2
}

func (m *murmur3) block(k uint32) {
	m.h ^= murmurMixK(k)
	m.h = bits.RotateLeft32(m.h, 13)
	m.h = m.h*5 + 0xe6546b64
}

// writeString feeds s to the hash.
func (m *murmur3) writeString(s string) { murmurWrite(m, s) }

// writeBytes feeds b to the hash.
func (m *murmur3) writeBytes(b []byte) { murmurWrite(m, b) }

func murmurWrite[T string | []byte](m *murmur3, s T) {
	m.n += uint32(len(s))
	i := 0
	// Complete a pending partial block first.
	for m.ntail > 0 && i < len(s) {
		m.tail |= uint32(s[i]) << (8 * m.ntail)
		m.ntail++
		i++
		if m.ntail == 4 {
			m.block(m.tail)
			m.tail, m.ntail = 0, 0
		}
	}
	for ; i+4 <= len(s); i += 4 {
		m.block(uint32(s[i]) | uint32(s[i+1])<<8 | uint32(s[i+2])<<16 | uint32(s[i+3])<<24)
	}
	for ; i < len(s); i++ {
		m.tail |= uint32(s[i]) << (8 * m.ntail)
		m.ntail++
	}
}

// sum32 returns the hash of everything written so far. It does not change m.
func (m *murmur3) sum32() uint32 {
	h := m.h
	if m.ntail > 0 {
		h ^= murmurMixK(m.tail)
	}
	h ^= m.n
	h ^= h >> 16
	h *= 0x85ebca6b
	h ^= h >> 13
	h *= 0xc2b2ae35
	h ^= h >> 16
	return h
}

// murmur3String returns MurmurHash3 x86_32 of s with seed 0.
func murmur3String(s string) uint32 {
	var m murmur3
	m.writeString(s)
	return m.sum32()
}
