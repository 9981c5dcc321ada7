package extauthz

import (
	"errors"

	"google.golang.org/protobuf/encoding/protowire"
)

// Envoy sends every header of every request (unless its allow-list says
// otherwise) in a map, and protobuf-go decodes map fields through
// reflection: for a request with ten headers, decoding took more CPU than
// the whole check. Check needs a handful of values, so it reads them from
// the wire instead, without building a CheckRequest. The reading follows
// protobuf's rules: every occurrence of an embedded message is merged into
// one (so it is walked in order), the last value of a singular field wins,
// a later map entry replaces an earlier one with the same key, and a field
// with an unexpected wire type is an unknown field. wire_test.go checks it
// against proto.Unmarshal, on random requests and, as a fuzz target
// (FuzzCheckView), on any bytes.

// Field numbers in envoy.service.auth.v3 and envoy.config.core.v3.
const (
	fCheckAttributes     protowire.Number = 1  // CheckRequest.attributes
	fAttrSource          protowire.Number = 1  // AttributeContext.source
	fPeerAddress         protowire.Number = 1  // AttributeContext.Peer.address
	fAddressSocket       protowire.Number = 1  // Address.socket_address (oneof address)
	fAddressPipe         protowire.Number = 2  // Address.pipe (oneof address)
	fAddressInternal     protowire.Number = 3  // Address.envoy_internal_address (oneof address)
	fSocketAddress       protowire.Number = 2  // SocketAddress.address
	fAttrRequest         protowire.Number = 4  // AttributeContext.request
	fAttrContextExt      protowire.Number = 10 // AttributeContext.context_extensions
	fRequestHTTP         protowire.Number = 2  // AttributeContext.Request.http
	fHTTPHeaders         protowire.Number = 3  // HttpRequest.headers (map)
	fHTTPPath            protowire.Number = 4  // HttpRequest.path
	fHTTPHeaderMap       protowire.Number = 13 // HttpRequest.header_map
	fHeaderMapHeaders    protowire.Number = 1  // HeaderMap.headers
	fMapKey              protowire.Number = 1  // map entry key; HeaderValue.key
	fMapValue            protowire.Number = 2  // map entry value; HeaderValue.value
	fHeaderValueRawValue protowire.Number = 3  // HeaderValue.raw_value
)

var errWire = errors.New("malformed CheckRequest")

// wireHeader is one request header, as byte slices of the request.
type wireHeader struct {
	name, value []byte
	raw         bool // from header_map (encode_raw_headers), not merged
}

// checkView is what Check reads from a CheckRequest. Its slices point into
// the request's bytes.
type checkView struct {
	// The headers in order: the first len(buf) in buf (a view lives on the
	// stack, so most requests need no allocation), the rest in more.
	n    int
	buf  [32]wireHeader
	more []wireHeader
	// mapped counts headers from the headers map; when there are any, the
	// header_map entries are ignored, as Envoy sends one or the other.
	mapped      int
	path        []byte
	scopes      []byte
	environment []byte
	source      []byte // the downstream peer's IP address, as text
}

// parse reads a CheckRequest's wire form into v. (Plain loops rather than
// callbacks: this runs on every request.)
func (v *checkView) parse(b []byte) error {
	for len(b) > 0 {
		num, val, rest, err := wireField(b)
		if err != nil {
			return err
		}
		b = rest
		if num == fCheckAttributes && val != nil {
			if err := v.attributes(val); err != nil {
				return err
			}
		}
	}
	return nil
}

func (v *checkView) add(h wireHeader) {
	if v.n < len(v.buf) {
		v.buf[v.n] = h
	} else {
		v.more = append(v.more, h)
	}
	v.n++
}

func (v *checkView) header(i int) *wireHeader {
	if i < len(v.buf) {
		return &v.buf[i]
	}
	return &v.more[i-len(v.buf)]
}

func (v *checkView) attributes(b []byte) error {
	for len(b) > 0 {
		num, val, rest, err := wireField(b)
		if err != nil {
			return err
		}
		b = rest
		if val == nil {
			continue
		}
		switch num {
		case fAttrSource:
			v.source = peerAddress(val, v.source)
		case fAttrRequest:
			for len(val) > 0 {
				n, http, rest, err := wireField(val)
				if err != nil {
					return err
				}
				val = rest
				if n == fRequestHTTP && http != nil {
					if err := v.http(http); err != nil {
						return err
					}
				}
			}
		case fAttrContextExt:
			k, x, err := mapEntry(val)
			if err != nil {
				return err
			}
			switch string(k) {
			case ExtensionScopes:
				v.scopes = x
			case ExtensionEnvironment:
				v.environment = x
			}
		}
	}
	return nil
}

func (v *checkView) http(b []byte) error {
	for len(b) > 0 {
		num, val, rest, err := wireField(b)
		if err != nil {
			return err
		}
		b = rest
		if val == nil {
			continue
		}
		switch num {
		case fHTTPHeaders:
			k, x, err := mapEntry(val)
			if err != nil {
				return err
			}
			v.mapped++
			v.add(wireHeader{name: k, value: x})
		case fHTTPPath:
			v.path = val
		case fHTTPHeaderMap:
			for len(val) > 0 {
				n, hv, rest, err := wireField(val)
				if err != nil {
					return err
				}
				val = rest
				if n == fHeaderMapHeaders && hv != nil {
					if err := v.rawHeader(hv); err != nil {
						return err
					}
				}
			}
		}
	}
	return nil
}

func (v *checkView) rawHeader(b []byte) error {
	h := wireHeader{raw: true}
	var value, rawValue []byte
	for len(b) > 0 {
		num, val, rest, err := wireField(b)
		if err != nil {
			return err
		}
		b = rest
		if val == nil {
			continue
		}
		switch num {
		case fMapKey:
			h.name = val
		case fMapValue:
			value = val
		case fHeaderValueRawValue:
			rawValue = val
		}
	}
	// Envoy fills raw_value; value is its deprecated twin.
	h.value = value
	if rawValue != nil {
		h.value = rawValue
	}
	v.add(h)
	return nil
}

// lookup returns the value of the header name (lower case) and how many
// separate values it has: a map holds one (Envoy joins repeated headers with
// ","; the last entry of a repeated key wins), header_map one per line.
func (v *checkView) lookup(name string) (value []byte, n int) {
	for i := v.n - 1; i >= 0; i-- {
		h := v.header(i)
		if h.raw == (v.mapped > 0) || !equalFold(h.name, name) {
			continue
		}
		if !h.raw {
			return h.value, 1
		}
		if n == 0 {
			value = h.value
		}
		n++
	}
	return value, n
}

// each calls fn with the name and value of every header in use, in order.
func (v *checkView) each(fn func(name, value []byte)) {
	for i := 0; i < v.n; i++ {
		if h := v.header(i); h.raw != (v.mapped > 0) {
			fn(h.name, h.value)
		}
	}
}

// wireField reads the first field of msg: its number, its payload if it is
// length-delimited (never nil then; nil for other wire types, which a
// length-delimited field of the schema read with another type is, to
// protobuf, an unknown field), and the rest of msg.
func wireField(msg []byte) (num protowire.Number, val, rest []byte, err error) {
	num, typ, n := protowire.ConsumeTag(msg)
	if n < 0 {
		return 0, nil, nil, errWire
	}
	msg = msg[n:]
	if typ != protowire.BytesType {
		n = protowire.ConsumeFieldValue(num, typ, msg)
		if n < 0 {
			return 0, nil, nil, errWire
		}
		return num, nil, msg[n:], nil
	}
	val, n = protowire.ConsumeBytes(msg)
	if n < 0 {
		return 0, nil, nil, errWire
	}
	if val == nil {
		val = msg[:0] // present but empty: still not nil
	}
	return num, val, msg[n:], nil
}

// peerAddress reads Peer.address.socket_address.address from one
// occurrence of a Peer and merges it into cur, what earlier occurrences
// left, as protobuf merges: an occurrence without an address keeps cur, a
// later address replaces it, and a pipe or envoy_internal_address (the
// other members of Address's oneof) clears it. An address that cannot be
// read is no address (nil), which an allow-list refuses.
func peerAddress(peer, cur []byte) []byte {
	for len(peer) > 0 {
		num, addr, rest, err := wireField(peer)
		if err != nil {
			return nil
		}
		peer = rest
		if num != fPeerAddress || addr == nil {
			continue
		}
		for len(addr) > 0 {
			num, val, rest, err := wireField(addr)
			if err != nil {
				return nil
			}
			addr = rest
			switch {
			case val == nil:
			case num == fAddressSocket:
				if a := nested(val, fSocketAddress); a != nil {
					cur = a
				}
			case num == fAddressPipe || num == fAddressInternal:
				cur = nil
			}
		}
	}
	return cur
}

// nested follows a path of embedded message fields (the last one a string)
// and returns the last value found, nil if none or malformed: an address
// that cannot be read is no address, which an allow-list refuses.
func nested(b []byte, path ...protowire.Number) []byte {
	var found []byte
	for len(b) > 0 {
		num, val, rest, err := wireField(b)
		if err != nil {
			return nil
		}
		b = rest
		if val == nil || num != path[0] {
			continue
		}
		if len(path) == 1 {
			found = val
		} else if x := nested(val, path[1:]...); x != nil {
			found = x
		}
	}
	return found
}

// mapEntry reads a map<string, string> entry.
func mapEntry(b []byte) (k, v []byte, err error) {
	for len(b) > 0 {
		num, val, rest, err := wireField(b)
		if err != nil {
			return nil, nil, err
		}
		b = rest
		switch {
		case val == nil:
		case num == fMapKey:
			k = val
		case num == fMapValue:
			v = val
		}
	}
	return k, v, nil
}

// equalFold compares an ASCII header name with a lower-case one.
func equalFold(b []byte, lower string) bool {
	if len(b) != len(lower) {
		return false
	}
	for i := 0; i < len(b); i++ {
		c := b[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != lower[i] {
			return false
		}
	}
	return true
}

// hasIdentityPrefix reports whether a header name starts with x-keyward-, in any case.
func hasIdentityPrefix(name []byte) bool {
	return len(name) >= len(IdentityPrefix) && equalFold(name[:len(IdentityPrefix)], IdentityPrefix)
}
