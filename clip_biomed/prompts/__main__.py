"""``python -m clip_biomed.prompts {generate,validate}`` (see clip_biomed/prompts/generate.py)."""
import sys

from clip_biomed.prompts.generate import main

sys.exit(main())
