"""Every file a job writes or reads under a run or output directory goes through `lumiere_jax.storage` (local and
gs:// alike). This AST check finds filesystem calls (`open`, `os.path.exists`, `os.makedirs`, `shutil`, `tf.io.gfile`
...) in the job packages; the few that remain work on local staging folders or on local files the user provides,
and are listed here with the reason."""

import ast
import pathlib

REPO = pathlib.Path(__file__).resolve().parent.parent
CHECKED = ["lumiere_jax/train", "lumiere_jax/sample", "lumiere_jax/export", "lumiere_jax/evaluate",
           "lumiere_jax/data/pipeline.py", "lumiere_jax/data/text_cache.py", "lumiere_jax/data/video_io.py"]
FILESYSTEM_CALLS = ("open", "os.listdir", "os.makedirs", "os.mkdir", "os.remove", "os.unlink", "os.replace",
                    "os.rename", "os.walk", "os.scandir", "os.path.exists", "os.path.isfile", "os.path.isdir",
                    "os.path.getsize", "os.path.abspath", "os.path.realpath", "shutil.", "tf.io.gfile.", "glob.")
# (file, function): why its filesystem calls are not on run-directory paths.
ALLOWED = {
    ("lumiere_jax/train/metrics.py", "_UploadingWriter.flush"): "the local folder TensorBoard writes before upload",
    ("lumiere_jax/data/pipeline.py", "DataIterator.save_snapshot"): "the local staging folder of a snapshot",
    ("lumiere_jax/data/pipeline.py", "DataIterator.restore_snapshot"): "the local copy of a snapshot",
    ("lumiere_jax/data/text_cache.py", "_ShardWriter.commit"): "TFRecord shards in a local staging folder",
    ("lumiere_jax/evaluate/clip.py", "CLIPConfig.to_json"): "metric network configs the user provides locally",
    ("lumiere_jax/evaluate/clip.py", "CLIPConfig.from_json"): "metric network configs the user provides locally",
    ("lumiere_jax/evaluate/clip_tokenizer.py", "CLIPTokenizer.__init__"): "a local vocabulary file",
    ("lumiere_jax/evaluate/convert.py", "main"): "converts local weight files the user provides",
    ("lumiere_jax/evaluate/networks.py", "CLIPSimilarity.from_files"): "local metric network weights",
    ("lumiere_jax/evaluate/weights.py", "load_flat"): "local metric network weights",
    ("lumiere_jax/evaluate/demo_page.py", "_relative"): "the demo's results page, in its local out_dir",
    ("lumiere_jax/evaluate/demo_page.py", "read_sidecars"): "the demo's results page, in its local out_dir",
    ("lumiere_jax/evaluate/demo_page.py", "collect_clips"): "the demo's results page, in its local out_dir",
    ("lumiere_jax/evaluate/demo_page.py", "collect"): "the demo's results page, in its local out_dir",
    ("lumiere_jax/evaluate/demo_page.py", "write_page"): "the demo's results page, in its local out_dir",
}


class FilesystemCalls(ast.NodeVisitor):
    """Collects `{(file, enclosing class/function path): [call (line N), ...]}` of one file into `found`."""

    def __init__(self, file: str, found: dict):
        self.file, self.found, self.scope = file, found, []

    def visit_scope(self, node):
        self.scope.append(node.name)
        self.generic_visit(node)
        self.scope.pop()

    visit_ClassDef = visit_FunctionDef = visit_AsyncFunctionDef = visit_scope

    def visit_Call(self, node):
        name = ast.unparse(node.func)
        if name == "open" or name.startswith(FILESYSTEM_CALLS[1:]):
            key = (self.file, ".".join(self.scope))
            self.found.setdefault(key, []).append(f"{name} (line {node.lineno})")
        self.generic_visit(node)


def filesystem_calls():
    found = {}
    for root in CHECKED:
        path = REPO / root
        for file in sorted(path.rglob("*.py")) if path.is_dir() else [path]:
            FilesystemCalls(str(file.relative_to(REPO)), found).visit(ast.parse(file.read_text()))
    return found


def test_job_code_uses_the_storage_layer():
    unexplained = {key: calls for key, calls in filesystem_calls().items() if key not in ALLOWED}
    assert not unexplained, f"filesystem calls outside lumiere_jax/storage.py: {unexplained}"


def test_the_allow_list_has_no_stale_entries():
    assert set(ALLOWED) <= set(filesystem_calls())
