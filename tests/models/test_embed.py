"""The sentence model loads with any tested sentence-transformers, also one attached through embedding_dir."""
import os
import subprocess
import sys

import pytest

from conftest import SAMPLE, needs_shared
from interrogator.models.embed import local_only_option

OLD_LIBRARY = os.environ.get("INTERROGATOR_TEST_SENTENCE_DIR")


def test_a_constructor_without_local_files_only_is_not_given_it():
    from sentence_transformers import SentenceTransformer

    class Before30:  # sentence-transformers 2.x: (model_name_or_path, modules, device, cache_folder, ...)
        def __init__(self, model_name_or_path=None, modules=None, device=None, cache_folder=None,
                     use_auth_token=None):
            pass
    assert local_only_option(Before30) == {}
    import inspect
    expected = ({"local_files_only": True} if "local_files_only" in inspect.signature(SentenceTransformer.__init__).parameters
                else {})
    assert local_only_option(SentenceTransformer) == expected


SCRIPT = """
import sys
import numpy as np, pandas as pd
from interrogator.models.embed import embed_prompts, load_sentence_model
model = load_sentence_model(sys.argv[1], "cpu", embedding_dir=sys.argv[2])
import sentence_transformers
prompts = pd.read_csv(sys.argv[3])
official = pd.read_csv(sys.argv[4]).val.to_numpy(np.float32).reshape(len(prompts), 384)
order = np.argsort(prompts.imgId.to_numpy())
vectors = embed_prompts(model, prompts.prompt.tolist())[order]
print(sentence_transformers.__file__, sentence_transformers.__version__, float(np.abs(vectors - official).max()))
"""


@needs_shared
@pytest.mark.skipif(not OLD_LIBRARY, reason="INTERROGATOR_TEST_SENTENCE_DIR names no attached sentence-transformers "
                                            "(.ci/run's floor step sets it)")
def test_an_older_library_attached_through_embedding_dir(minilm_path):
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(minilm_path), OLD_LIBRARY, str(SAMPLE / "prompts.csv"),
                           str(SAMPLE / "sample_submission.csv")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    where, version, diff = proc.stdout.strip().splitlines()[-1].split()
    assert where.startswith(OLD_LIBRARY) and int(version.split(".")[0]) < 3  # it predates local_files_only
    assert float(diff) < 1e-6
