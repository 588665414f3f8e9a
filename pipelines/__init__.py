"""Diffusers integration for walkreg (installed as ``walkreg.pipelines``; needs ``pip install 'walkreg[diffusers]'``)."""
