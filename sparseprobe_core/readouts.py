"""What the causal arm reads from the final residual at the probed token: a probe, and the model's own
next-token behaviour where a concept has one.

Both readouts map the final residual r (before the final norm, at each text's last token; n x d_model)
to one score per text, oriented so that a higher score means "more like label 1":

- ``ProbeReadout``: the score s = w . r + c of a dense probe fitted on the clean final residual of the
  concept's fit split (``ablation.dense_probe``), as evaluation (ii) has always used;
- ``BehaviourReadout``: the model's log-odds of continuing with a label-1 token rather than a label-0
  token, b = log sum_{t in T1} p(t | text) - log sum_{t in T0} p(t | text), in nats. With logits
  z = W_U norm(r) (+ b_U), p(t) = exp(z_t) / Z and the normaliser Z cancels:
  b = logsumexp(z[T1]) - logsumexp(z[T0]), so only the |T1| + |T0| rows of the unembedding are used,
  never the logits over the whole vocabulary (262k tokens on Gemma 3).

``BEHAVIOURS`` declares, per concept, the two token sets and why the model's next token should differ
between the classes. A concept is in it only when its definition implies such a difference at the probed
token (a closing quote can follow a word inside a string literal, never a NAME in code; a French function
word is likelier after French text). Not every concept has one: ``code_comment`` (a comment and a
docstring line both go on with prose and end with a newline), ``code_loop_body`` (a loop body and an
if/with/try block admit the same next tokens), ``pos_base_form`` (*to make* and *they make* take the
same objects) and ``sentiment`` (read at the final ".", whose continuation says nothing about polarity:
an audit measured a naive readout at AUROC 0.51). The token sets were written from the concept
definitions before any readout was computed; only those of the development concepts
(``config.DEV_CONCEPTS``) were checked on data.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import numpy as np
import torch

from . import ablation

_ENGLISH = (
    "the", "of", "and", "to", "is", "that", "for", "it", "with", "as", "was", "on", "be", "by", "this", "are",
    "or", "from", "at", "an", "not", "you", "have", "which", "your",
)  # fmt: skip


@dataclass(frozen=True)
class TokenSet:
    """Next tokens (as the tokenizer decodes them one by one): a whole word after a space (`words`, in
    lower case; the capitalised form counts too), or any token whose text starts with one of `prefixes`."""

    words: tuple[str, ...] = ()
    prefixes: tuple[str, ...] = ()

    def matches(self, text: str) -> bool:
        """Does a decoded token belong to the set?"""
        word = text[1:] if text.startswith(" ") else None
        return (word is not None and word.lower() in self.words and word in (word.lower(), word.capitalize())) or (
            bool(self.prefixes) and text.startswith(self.prefixes)
        )


@dataclass(frozen=True)
class Behaviour:
    """A concept's behavioural readout: log-odds of a `label_1` next token against a `label_0` one."""

    label_1: TokenSet
    label_0: TokenSet
    why: str  # one sentence: why the next token should differ between the classes


def _language(*words: str) -> Behaviour:
    return Behaviour(
        TokenSet(words),
        TokenSet(_ENGLISH),
        "a UI string in the language is likelier to go on in it: its function words vs English ones",
    )


BEHAVIOURS: dict[str, Behaviour] = {
    "french": _language(
        "le", "la", "les", "de", "des", "du", "et", "est", "une", "un", "que", "qui", "dans", "sur", "pas",
        "avec", "ce", "cette", "au", "aux", "par", "ne", "vous", "sont", "il",
    ),
    "german": _language(
        "der", "das", "und", "ist", "nicht", "ein", "eine", "zu", "den", "dem", "des", "mit", "sich", "auf",
        "für", "von", "auch", "es", "werden", "wird", "sind", "kann", "nur", "oder", "bei",
    ),
    "spanish": _language(
        "el", "la", "los", "las", "de", "del", "que", "y", "en", "un", "una", "por", "con", "para", "es", "se",
        "al", "lo", "su", "sus", "como", "más", "pero", "este", "esta",
    ),
    "italian": _language(
        "il", "di", "che", "la", "le", "un", "una", "del", "della", "non", "sono", "con", "si", "da", "gli",
        "nel", "alla", "questo", "è", "dei", "più", "anche", "essere", "lo", "ha",
    ),
    "dutch": _language(
        "de", "het", "een", "en", "van", "dat", "niet", "zijn", "op", "te", "voor", "met", "je", "er", "aan",
        "ook", "als", "maar", "om", "dit", "deze", "worden", "wordt", "naar", "bij",
    ),
    "portuguese_spanish": Behaviour(
        TokenSet(("não", "do", "da", "dos", "das", "um", "uma", "em", "com", "é", "ao", "os", "você", "seu", "sua",
                  "mais", "isso", "pelo", "pela", "nos", "foi", "são", "também", "mas", "ou")),
        TokenSet(("el", "los", "las", "del", "un", "una", "en", "con", "es", "al", "y", "lo", "usted", "su", "sus",
                  "más", "pero", "también", "o", "esto", "fue", "son", "muy", "hay", "ya")),
        "Brazilian Portuguese text goes on with Portuguese function words, Spanish text with Spanish ones",
    ),
    "python_string": Behaviour(
        TokenSet(prefixes=("'", '"')),
        TokenSet(prefixes=("(", "[", " =", "=")),
        "a word inside a string literal can be followed by its closing quote, a NAME in code never; "
        "a NAME is called, subscripted or assigned",
    ),
    "python_number": Behaviour(
        TokenSet(prefixes=tuple("0123456789")),
        TokenSet(prefixes=("(", "[", "_")),
        "the model cannot know the number ended, so more digits are likely; a NUMBER is never called, "
        "subscripted or continued by an underscore, a NAME often",
    ),
    "code_bracket": Behaviour(
        TokenSet(prefixes=(")", "]", "}")),
        TokenSet(prefixes=("\n", " =")),
        "only an open bracket can be closed; an assignment or the end of the logical line come at depth 0",
    ),
    "code_fstring": Behaviour(
        TokenSet(prefixes=("}",)),
        TokenSet(prefixes=("\n", " =")),
        "a replacement field is closed by '}'; a statement's line end or an assignment cannot occur inside it",
    ),
    "code_def_param": Behaviour(
        TokenSet(prefixes=(":",)),
        TokenSet(prefixes=(".", "(", "[")),
        "a parameter may be annotated (':'); a call argument may be an attribute access, a call or a subscript",
    ),
    "parenthetical": Behaviour(
        TokenSet(prefixes=(")",)),
        TokenSet(prefixes=(".",)),
        "an open parenthesis is closed before the sentence ends",
    ),
    "pos_plural": Behaviour(
        TokenSet(("are", "were", "have", "do", "seem", "show", "include", "remain", "make", "need")),
        TokenSet(("is", "was", "has", "does", "seems", "shows", "includes", "remains", "makes", "needs")),
        "a plural noun takes plural verb agreement, a singular one singular agreement",
    ),
    "pos_noun_verb": Behaviour(
        TokenSet(("of", "is", "was", "are", "were", "has", "had")),
        TokenSet(("the", "a", "an", "his", "her", "their", "its", "them", "him", "me", "us", "you", "my", "our")),
        "a noun is followed by 'of' or by a verb; a verb by its object",
    ),
    "pos_participle": Behaviour(
        TokenSet(("by",)),
        TokenSet(("the", "a", "an", "his", "her", "their", "him", "them", "me", "us", "my", "our")),
        "a past participle is often passive (followed by 'by'); a simple past takes its object",
    ),
    "that_relative": Behaviour(
        TokenSet(("is", "was", "are", "were", "has", "have", "had", "will", "would", "can", "could", "may",
                  "might", "should", "must", "does", "did")),
        TokenSet(("the", "a", "an", "this", "these", "those", "there", "his", "her", "their", "our", "some",
                  "such", "if", "when", "no", "any", "all", "many", "most")),
        "a relative 'that' is mostly the subject of its clause (a verb follows); a complementizer 'that' "
        "opens a clause with its own subject (a determiner follows)",
    ),
}  # fmt: skip

# decoded vocabulary per tokenizer (decoding Gemma 3's 262k tokens one by one takes about 3 s)
_VOCAB: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def decoded_vocabulary(tokenizer) -> list[str]:
    """The text of every token id decoded alone (special tokens included, as their own text)."""
    if tokenizer not in _VOCAB:
        _VOCAB[tokenizer] = tokenizer.batch_decode([[i] for i in range(len(tokenizer))])
    return _VOCAB[tokenizer]


def token_ids(tokenizer, behaviour: Behaviour) -> tuple[np.ndarray, np.ndarray]:
    """The ids of the label-1 and the label-0 token sets in this tokenizer's vocabulary. A token matching
    both sets is in neither (it cannot count for one class); special tokens are never in a set."""
    special = set(tokenizer.all_special_ids)
    vocab = decoded_vocabulary(tokenizer)
    one = {i for i, t in enumerate(vocab) if i not in special and behaviour.label_1.matches(t)}
    zero = {i for i, t in enumerate(vocab) if i not in special and behaviour.label_0.matches(t)}
    ids1, ids0 = np.array(sorted(one - zero), dtype=np.int64), np.array(sorted(zero - one), dtype=np.int64)
    if not len(ids1) or not len(ids0):
        raise ValueError(f"a token set of this behaviour has no token in this vocabulary ({len(ids1)}, {len(ids0)})")
    return ids1, ids0


class ProbeReadout:
    """s = w . r + c: the dense probe (`ablation.dense_probe`) fitted on the clean final residual of the fit
    split; the readout of evaluation (ii)."""

    def __init__(self, resid_fit: np.ndarray, y_fit: np.ndarray, seed: int = 0):
        self.probe = ablation.dense_probe(seed).fit(resid_fit, y_fit)

    def __call__(self, resid: np.ndarray) -> np.ndarray:
        """The probe score of each final residual (n,)."""
        return self.probe.decision_function(resid)


class BehaviourReadout:
    """b = logsumexp(z[T1]) - logsumexp(z[T0]) with z = W_U[T] norm(r) (+ b_U[T]), in nats: the model's
    log-odds of a label-1 next token against a label-0 one, from the final norm and the rows of the
    unembedding of the two sets only. A final logit soft-cap (Gemma 2: z -> cap tanh(z / cap)) is applied
    when the model has one."""

    def __init__(self, bridge, behaviour: Behaviour):
        self.behaviour = behaviour
        self.ids1, self.ids0 = token_ids(bridge.tokenizer, behaviour)
        head = bridge.original_model.get_output_embeddings()
        ids = torch.as_tensor(np.concatenate([self.ids1, self.ids0]))
        self.rows = head.weight[ids].detach().float()
        self.bias = None if getattr(head, "bias", None) is None else head.bias[ids].detach().float()
        self.norm = bridge.original_model.base_model.norm
        self.cap = getattr(bridge.original_model.config, "final_logit_softcapping", None)

    def logits(self, resid: np.ndarray) -> torch.Tensor:
        """(n, |T1| + |T0|) next-token logits of the two sets' tokens."""
        with torch.no_grad():
            z = self.norm(torch.as_tensor(np.asarray(resid), dtype=torch.float32)) @ self.rows.T
            if self.bias is not None:
                z = z + self.bias
            return self.cap * torch.tanh(z / self.cap) if self.cap else z

    def __call__(self, resid: np.ndarray) -> np.ndarray:
        """The log-odds of each text's next token being in T1 rather than T0 (n,), in nats."""
        z = self.logits(resid).double()
        n1 = len(self.ids1)
        return (torch.logsumexp(z[:, :n1], dim=1) - torch.logsumexp(z[:, n1:], dim=1)).numpy()


def for_concept(name: str, bridge, resid_fit: np.ndarray, y_fit: np.ndarray, seed: int = 0) -> dict:
    """The readouts of a concept: {"probe": ProbeReadout, "behaviour": BehaviourReadout} (the latter
    only when `BEHAVIOURS` declares one)."""
    out = {"probe": ProbeReadout(resid_fit, y_fit, seed)}
    if name in BEHAVIOURS:
        out["behaviour"] = BehaviourReadout(bridge, BEHAVIOURS[name])
    return out
