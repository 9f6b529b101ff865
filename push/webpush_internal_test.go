package push

import (
	"crypto/ecdh"
	"encoding/base64"
	"testing"
)

// RFC 8291 Appendix A: with the example's sender key and salt, the encrypted
// body must match the RFC byte for byte. A round trip through our own
// decryption could not catch a derivation mistake made the same way twice.
func TestEncryptRFC8291AppendixA(t *testing.T) {
	b := func(s string) []byte {
		v, err := base64.RawURLEncoding.DecodeString(s)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	asKey, err := ecdh.P256().NewPrivateKey(b("yfWPiYE-n46HLnH0KqZOF1fJJU3MYrct3AELtAQ-oRw"))
	if err != nil {
		t.Fatal(err)
	}
	got, err := encryptRFC8291([]byte("When I grow up, I want to be a watermelon"),
		b("BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4"),
		b("BTBZMqHH6r4Tts7J_aSIgg"), asKey, b("DGv6ra1nlYgDCS1FRnbzlw"))
	if err != nil {
		t.Fatal(err)
	}
	const want = "DGv6ra1nlYgDCS1FRnbzlwAAEABBBP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A_yl95bQpu6cVPTpK4Mqgkf1CXztLVBSt2Ks3oZwbuwXPXLWyouBWLVWGNWQexSgSxsj_Qulcy4a-fN"
	if s := base64.RawURLEncoding.EncodeToString(got); s != want {
		t.Fatalf("body\n got %s\nwant %s", s, want)
	}
}

func TestWebPushTopicIsValid(t *testing.T) {
	for _, key := range []string{"", "conv-7", string(make([]byte, 500))} {
		topic := webPushTopic(key)
		if len(topic) != 32 {
			t.Errorf("topic %q has %d characters, want 32", topic, len(topic))
		}
		for _, c := range topic {
			if !('A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
				t.Errorf("topic %q has %q outside base64url", topic, c)
			}
		}
	}
}
