package pushtest

import (
	"crypto/ecdh"
	"encoding/base64"
	"testing"
)

// The fake's decryption must read RFC 8291 Appendix A, or a sender and the
// fake could agree on a mistake.
func TestDecryptRFC8291AppendixA(t *testing.T) {
	b := func(s string) []byte {
		v, err := base64.RawURLEncoding.DecodeString(s)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	ua, err := ecdh.P256().NewPrivateKey(b("q1dXpw3UpT5VOmu_cf_v6ih07Aems3njxI-JWgLcM94"))
	if err != nil {
		t.Fatal(err)
	}
	body := b("DGv6ra1nlYgDCS1FRnbzlwAAEABBBP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A_yl95bQpu6cVPTpK4Mqgkf1CXztLVBSt2Ks3oZwbuwXPXLWyouBWLVWGNWQexSgSxsj_Qulcy4a-fN")
	got, err := DecryptAES128GCM(body, ua, b("BTBZMqHH6r4Tts7J_aSIgg"))
	if err != nil || string(got) != "When I grow up, I want to be a watermelon" {
		t.Fatalf("%q %v", got, err)
	}
	body[len(body)-1] ^= 1
	if _, err := DecryptAES128GCM(body, ua, b("BTBZMqHH6r4Tts7J_aSIgg")); err == nil {
		t.Fatal("tampered body decrypted")
	}
}
