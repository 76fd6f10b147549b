package eval

import (
	"fmt"
	"math/rand/v2"
	"testing"

	twmb "github.com/twmb/murmur3"
)

// Published MurmurHash3_x86_32 test vectors (SMHasher and the libraries
// that port it).
func TestMurmur3Vectors(t *testing.T) {
	tests := []struct {
		in   string
		seed uint32
		want uint32
	}{
		{"", 0, 0},
		{"", 1, 0x514e28b7},
		{"", 0xffffffff, 0x81f16f39},
		{"\x00\x00\x00\x00", 0, 0x2362f9de},
		{"\xff\xff\xff\xff", 0, 0x76293b50},
		{"\x21\x43\x65\x87", 0, 0xf55b516b},
		{"\x21\x43\x65\x87", 0x5082edee, 0x2362f9de},
		{"\x21\x43\x65", 0, 0x7e4a8634},
		{"\x21\x43", 0, 0xa0f7b07a},
		{"\x21", 0, 0x72661cf4},
		{"aaaa", 0x9747b28c, 0x5a97808a},
		{"Hello, world!", 0x9747b28c, 0x24884cba},
		{"The quick brown fox jumps over the lazy dog", 0x9747b28c, 0x2fa826cd},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%q/seed=%#x", tt.in, tt.seed), func(t *testing.T) {
			m := murmur3{h: tt.seed}
			m.writeString(tt.in)
			if got := m.sum32(); got != tt.want {
				t.Errorf("murmur3(%q, seed %#x) = %#08x, want %#08x", tt.in, tt.seed, got, tt.want)
			}
		})
	}
}

// TestMurmur3Incremental checks that hashing a key in pieces (as fractional
// does for flag key + targeting key and for "cat") equals hashing it whole,
// and that both agree with an independent implementation.
func TestMurmur3Incremental(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 2000; i++ {
		b := make([]byte, r.IntN(40))
		for j := range b {
			b[j] = byte(r.IntN(256))
		}
		s := string(b)
		want := twmb.Sum32(b)
		if got := murmur3String(s); got != want {
			t.Fatalf("murmur3String(%q) = %#x, twmb/murmur3 (flagd's) says %#x", s, got, want)
		}
		var m murmur3
		for rest := s; rest != ""; {
			n := r.IntN(len(rest) + 1)
			if r.IntN(2) == 0 {
				m.writeString(rest[:n])
			} else {
				m.writeBytes([]byte(rest[:n]))
			}
			rest = rest[n:]
		}
		if got := m.sum32(); got != want {
			t.Fatalf("murmur3 of %q in pieces = %#x, whole %#x", s, got, want)
		}
	}
}
