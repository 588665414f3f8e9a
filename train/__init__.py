"""The CRW trainer (installed as ``walkreg.train``; needs ``pip install 'walkreg[train]'``)."""
