"""A local cloud for trying spawn and testing spored: the IMDSv2 emulator (``imds_emulator``)."""
