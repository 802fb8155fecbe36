//! HTTP layer: router, errors, auth, the compare endpoint, operations routes. STUB.
