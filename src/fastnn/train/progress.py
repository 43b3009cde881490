"""Per-epoch progress output for `Trainer.fit`: a tqdm bar when tqdm is installed
(the optional `progress` extra) and the output is a terminal, plain lines otherwise.

Only `Progress.bar` is touched per training step (``bar.update()``, and only when a bar
exists); everything else runs once per epoch.
"""
import sys

__all__ = ["Progress"]


def _tqdm():
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm


class Progress:
    """Writes the epoch lines and messages of one `fit` call.

    verbose: 0 silent, 1 one line per epoch (a tqdm bar per epoch when `mode` allows),
    2 plain lines and diagnostics tables. mode: "auto" (tqdm when installed and `stream`
    is a terminal), "tqdm" (whenever installed) or "plain".
    """

    def __init__(self, verbose=1, mode="auto", stream=None):
        self.verbose = verbose
        self.stream = stream if stream is not None else sys.stdout
        self.bar = None
        tqdm = None
        if verbose == 1 and mode != "plain":
            tqdm = _tqdm()
            if tqdm is not None and mode == "auto":
                isatty = getattr(self.stream, "isatty", None)
                if not (isatty is not None and isatty()):
                    tqdm = None
        self._tqdm = tqdm

    def start_epoch(self, epoch, epochs, steps):
        if self._tqdm is not None:
            self.bar = self._tqdm(total=steps, desc="epoch %d/%d" % (epoch, epochs),
                                  leave=True, file=self.stream, dynamic_ncols=True,
                                  mininterval=0.2)

    def end_epoch(self, line, postfix=None):
        if self.bar is not None:
            if postfix:
                self.bar.set_postfix_str(postfix, refresh=False)
            self.bar.close()
            self.bar = None
        elif self.verbose:
            self.write(line)

    def write(self, text):
        if not self.verbose:
            return
        if self._tqdm is not None:
            self._tqdm.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)

    def close(self):
        if self.bar is not None:
            self.bar.close()
            self.bar = None
