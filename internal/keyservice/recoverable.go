package keyservice

import (
	"fmt"

	"github.com/keyward/keyward/internal/keymat"
	"github.com/keyward/keyward/internal/keys"
)

// errNoMasterKey refuses a recoverable key, or a reveal, on a server
// without a master key.
var errNoMasterKey = keys.FailedPrecondition("recoverable keys need a master key: set KEYWARD_MASTER_KEY " +
	"(or --master-key-file) on the server to 32 random bytes, base64 or hex (openssl rand -base64 32); " +
	"without one, a secret is shown only when it is created or regenerated")

// sealSecret encrypts secret for key id under the master key. The
// plaintext copy it makes is zeroed before it returns.
func (s *Service) sealSecret(id string, secret keymat.Secret) ([]byte, error) {
	if s.sealer == nil {
		return nil, errNoMasterKey
	}
	plain := []byte(secret.String())
	defer clear(plain)
	sealed, err := s.sealer.Seal(id, plain)
	if err != nil {
		return nil, fmt.Errorf("seal secret of key %s: %w", id, err)
	}
	return sealed, nil
}
