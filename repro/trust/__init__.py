"""What a release claims and who vouches for it: licences, audit, provenance, signing, the card. No torch."""
