//! SEV and SEV-ES.
