"""verify.py - check a model's final math answer against a gold answer, safely, and say why.

The principle: a completion earns 1 when it commits to exactly one final value and that value equals
the gold. Not an answer: a bound or comparison ('less than 13', 'at least 13', 'x > 13'), a value it
negates ('It is not 13.', '13 is wrong'), two or more candidates ('12 or 13', 'between 12 and 14'),
a value it takes back or replaces later ('\\boxed{13}. That is wrong.', 'The answer is 13. Wait,
actually it is 15.' answers 15), an operation still to do against a number gold ('9 + 4',
'(9 + 4)/1', '2^{4}', 'twice 13', '20 plus 16'; but a/b of two integers, '2\\sqrt{3}' and
'\\pi/4' are values), a number cut out of another (13 is not in 113, 13.5, 12:13 or '#### 1,3').
A reward that pays for any of these is learned: a GRPO demo run learned to say the question back.
The feedback names why ('hedged between 12 and 13', 'an operation still to do: 9 + 4', 'negated'),
since GEPA's reflector reads it.

Use it from Python (the names below come from `from verify import ...`):

    score("So the total is \\boxed{\\frac{3}{4}}.", "0.75")   # -> (1.0, 'correct')
    score("It is 12 or 13.", "13")
    # -> (0.0, 'hedged between 12 and 13; commit to one final answer')
    score("The answer is 0.333.", "1/3")
    # -> (0.0, 'answer 0.333 is an approximation; give the exact form 1/3')
    extract_answer("... so the total is \\boxed{\\frac{3}{4}}.")   # -> '\\frac{3}{4}'
    normalize("\\dfrac{3}{4}")                                     # -> '3/4'
    is_equiv("0.75", "\\frac34")                                   # -> True (two answers, no text)

or from the shell:  python verify.py PRED GOLD

How score() decides, cheapest first:
  1. find the final answer and where it stands (_find_answer): the last \\boxed{} (with the boxes
     right before it: '\\boxed{1} and \\boxed{2}' is '1, 2'), unless an answer sentence comes after
     it; GSM8K '#### x' (commas only as thousands separators); 'the answer is x' / 'Answer: x' /
     'Answer $x$' / '13 is the answer' (trimmed: 'The smallest $k$ is 12.' -> 12; LaTeX without $
     kept whole); a whole-text answer; else the last number, math span or LaTeX, read with a list,
     a worked chain or a sign word before it, after signature lines. What a small model writes
     around an answer is read by the rules of _SAYINGS ('9 + 4 is 13', 'the answer is indeed 13',
     '13 when m = 10', '14, not 13'), an empty box stands for the answer beside it, and 'The answer
     is correct.' is a judgement, not an answer; a number is never cut out of a longer one;
  2. read what the text says around it (_committed): a later sentence that takes it back, a
     repetition loop that stops on another value, a negation, a bound, an operation in words, a
     hedge; any of them is 0 with its reason;
  3. clean LaTeX noise (\\left, \\$, %, degrees, thousands separators incl. ',\\!' and '{,}',
     full-width digits, repeating decimals '0.1\\overline{6}', numbers and signs in words, ...) and
     set a trailing unit aside ('15\\text{ cm}^2' is 15 in cm^2); a worked sum '12 + 13 = 25' is its
     last side, unless it starts with arithmetic of another value ('963 * 0 = 96' states nothing).
     When both answers give a unit, the units must be the same; a unit on one side only is no
     error, and units are never converted (1 m != 100 cm);
  4. against a number gold the answer must be a number (_against_a_number); plain numbers
     (integers, decimals, fractions, mixed numbers, 1.5e3) are compared exactly with
     fractions.Fraction, in this process, without sympy - this is the path every GSM8K-like
     reward takes;
  5. anything else (roots, pi, tuples, intervals, sets, matrices, equations, ratios, expressions)
     goes to a worker process that reads the answers with our own LaTeX reader into answer kinds
     (Expr, Eq, Seq, ...) of sympy objects built from a whitelist and compares them by a table of
     rules, under a hard deadline: a call that runs past its timeout kills its worker (a
     replacement starts in the background) and counts as not equal.
     Up to MAX_WORKERS workers serve concurrent threads; a call's deadline starts once it has a
     worker, so time queued behind another call's slow answer never counts against it.

Safety: model output is never evaluated as Python - no eval/exec, no sympify/parse_expr on raw
text. Sizes are bounded (answer length, nesting depth, power and factorial sizes), and the
deadline is enforced by the parent process, so it holds from any thread (no signal.alarm in the
caller). A worker is `python verify.py --verify-worker` started with subprocess (fork+exec), so it
imports only this file and sympy - never the caller's __main__ or torch - and workers are started
lazily on the first symbolic comparisons and stopped at exit (or by shutdown_worker()).
A worker never outlives its caller nor computes past a deadline, whatever ends the caller (exit
with a call in flight, an exception, SIGKILL): it exits as soon as its stdin closes or its parent
changes (seen by threads, so also mid-comparison), and each comparison arms an alarm a little past
the caller's deadline, whose default action ends the process even inside a C extension.

Numbers are equal when exactly equal, or when a decimal agrees with a gold that is no whole number
to about 6 significant digits (0.333333 = 1/3, but 0.333 != 1/3 and 1/2004! != 1/2006!); a whole-
number gold needs that integer (13.0 = 13, 6621478.0 != 6621474).

What it knows is kept in tables, each read by everything that needs it: _FUNCTIONS (function
names), _UNITS (units), _SAYINGS (how an answer is said in words), and for answers the kinds
(Expr, Eq, ...), _READERS (how each is read) and _RULES (how two kinds compare).
"""
import atexit
import functools
import json
import math
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import warnings
from collections import namedtuple
from fractions import Fraction

MAX_COMPLETION_CHARS = 100_000  # longer completions are rejected before any parsing
MAX_ANSWER_CHARS = 1_000        # a final answer longer than this is not a final answer
MAX_DEPTH = 40                  # bracket / operator nesting the reader accepts
MAX_DIGITS = 10_000             # largest exact number (in digits) a power may produce
MAX_FACTORIAL = 3_000           # n! allowed up to this n (3000! has ~9,100 digits)
WORKER_FLAG = "--verify-worker"
START_TIMEOUT = 60.0            # seconds a fresh worker may take to import sympy
MAX_WORKERS = 4                 # symbolic comparisons run in up to this many processes at once
QUEUE_WAIT = 60.0               # seconds a call may wait for a free worker (not its deadline)
ALARM_GRACE = 1.0               # a worker ends itself this long past its caller's deadline
PARENT_POLL = 0.5               # seconds between a worker's checks that its caller is alive

# ----------------------------------------------------------------------------- function names
# Every function the reader knows, in one table; the tokenizer, the reader and the cleaning regexes
# are built from it, so a name added here is read everywhere. Each name maps to (the sympy
# function, by its name in sympy, which only the worker imports; how the name is used):
#   "trig"    takes an angle: a degree sign inside it means pi/180 (\cos 60^\circ is 1/2)
#   "func"    any other function of one argument, written \ln x, \ln(x) or ln(x)
#   "matrix"  takes a square matrix (\det)
#   "letter"  a one-letter name that is a function when '(' follows it (f(x), P(1)), so f(x) = x^2
#             and f(y) = y^2 are the same answer; other letters multiply: a(b+c). Its sympy
#             function is None: an undefined function of that name.
_FUNCTIONS = {
    "sin": ("sin", "trig"), "cos": ("cos", "trig"), "tan": ("tan", "trig"),
    "sec": ("sec", "trig"), "csc": ("csc", "trig"), "cot": ("cot", "trig"),
    "arcsin": ("asin", "func"), "arccos": ("acos", "func"), "arctan": ("atan", "func"),
    "arcsec": ("asec", "func"), "arccsc": ("acsc", "func"), "arccot": ("acot", "func"),
    "sinh": ("sinh", "func"), "cosh": ("cosh", "func"), "tanh": ("tanh", "func"),
    "ln": ("log", "func"), "log": ("log", "func"), "exp": ("exp", "func"),
    "det": ("det", "matrix"),
    **{letter: (None, "letter") for letter in "fghFGHPQW"},
}
_NAMED_FUNCS = {name for name, (_, use) in _FUNCTIONS.items() if use != "letter"}
_FUNC_LETTERS = {name for name, (_, use) in _FUNCTIONS.items() if use == "letter"}
_TRIG_FUNCS = {name for name, (_, use) in _FUNCTIONS.items() if use == "trig"}
# Greek letters, read as variables (\\theta) and never taken for words
_GREEK = {"alpha", "beta", "gamma", "delta", "epsilon", "varepsilon", "zeta", "eta", "theta",
          "vartheta", "iota", "kappa", "lambda", "mu", "nu", "xi", "rho", "sigma", "tau",
          "upsilon", "phi", "varphi", "chi", "psi", "omega", "Gamma", "Delta", "Theta",
          "Lambda", "Xi", "Sigma", "Phi", "Psi", "Omega"}

# ----------------------------------------------------------------------------- units
# The units of measure an answer may end in ('5 cm', '15\text{ cm}^2', '3 square feet'): the unit's
# name -> its spellings; a plural 's' may follow any spelling longer than one letter. An answer
# keeps its unit, and _judge says how units count. Units are never converted: 1 m is not 100 cm.
_UNITS = {
    "mm": "mm millimeter millimetre", "cm": "cm centimeter centimetre",
    "km": "km kilometer kilometre", "m": "m meter metre", "in": "in inch inches",
    "ft": "ft foot feet", "yd": "yd yard", "mi": "mile", "l": "liter litre",
    "ml": "ml milliliter millilitre", "gal": "gallon", "g": "g gram", "kg": "kg kilogram",
    "lb": "lb pound", "s": "s sec second", "min": "min minute", "h": "hr hour", "day": "day",
    "week": "week", "month": "month", "year": "year", "mph": "mph", "km/h": "km/h",
    "degree": "degree", "dollar": "dollar", "cent": "cent", "yuan": "yuan", "euro": "euro",
    "percent": "percent pct percentage per cent",
}
# words after a number that say what was counted, not a unit of measure: dropped, not kept. Any
# other word after a number counts too ('13 marbles'), except those of _VALUE_WORDS_RE and
# _NOT_COUNTED_RE below
_COUNTED = "unit people student apple point"
# words after a number that change its value ('13 squared', '13 thousand', '13 halves', '13 and a
# half'): a number they follow is not the answer, and they are never a counted thing
_VALUE_WORDS_RE = re.compile(
    r"(?:squared|cubed|factorial|(?:thousand|million|billion|trillion|hundred|dozen)s?|tens|halves"
    r"|thirds|quarters|(?:four|fif|six|seven|eigh|nin|ten|hundred|thousand)ths?|minus|plus|over|divided"
    r"|choose|mod|modulo|and a half)(?![A-Za-z])", re.IGNORECASE)
# ... nor these, which compare, are math, or leave the number unfinished ('13 more than x')
_NOT_COUNTED_RE = re.compile(r"and|not|of|to|by|per|times|more|less|fewer|greater|smaller|larger|bigger"
                             r"|higher|lower|half|third|quarter|roots?|powers?|inverse|reciprocal"
                             r"|negative|positive|approximately|roughly|about|around|nearly|almost"
                             r"|radians?|rad|inf|infinity|infty|sqrt", re.IGNORECASE)
# spellings that are also a variable or a word count as a unit only after a space: 2m is 2 times m
_SPACED_UNITS = {"m", "s", "g", "l", "in"}
_UNIT_NAMES = {**{word: "" for word in _COUNTED.split()},
               **{spelling: name for name, spellings in _UNITS.items()
                  for spelling in re.findall(r"per cent|\S+", spellings)}}
# the spellings as one regex, for extraction: a word among them after a number is not prose
_UNIT_WORDS = "|".join(re.escape(w).replace("\\ ", " ?") + ("s?" if not w.endswith("s") else "")
                       for w in sorted(_UNIT_NAMES, key=len, reverse=True)
                       if w not in _SPACED_UNITS) + "|square|cubic"
_UNIT_TEXT_RE = re.compile(r"(?:(square|sq\.?|cubic)\s+)?([A-Za-z][A-Za-z/ ]*?)\.?(?:\s*\^\s*([23]))?")


def _unit_name(text):
    """The unit that text spells: 'cm^2', 'cm^{2}', 'square centimeters' and 'sq cm' are 'cm^2'; ''
    for a counted thing ('apples', 'square units'); None when text is no unit."""
    m = _UNIT_TEXT_RE.fullmatch(" ".join(text.replace("{", "").replace("}", "").split()))
    if not m:
        return None
    word = m.group(2)
    name = _UNIT_NAMES.get(word)
    if name is None and len(word) > 2 and word.endswith("s"):
        name = _UNIT_NAMES.get(word[:-1])
    if name is None:  # any other word is what was counted ('13 marbles'; not 'abc', a product)
        counted = (re.fullmatch(r"[A-Za-z]{4,}|[A-Za-z]{2,}s", word) and not m.group(1) and not m.group(3)
                   and not _VALUE_WORDS_RE.fullmatch(word) and not _NOT_COUNTED_RE.fullmatch(word)
                   and word not in _NAMED_FUNCS and word not in _GREEK)
        return "" if counted else None
    power = m.group(3) or {"cubic": "3", None: ""}.get(m.group(1), "2")
    return name + "^" + power if name and power else name

# ----------------------------------------------------------------------------- extraction

_BOX_RE = re.compile(r"\\(?:boxed|fbox)\b")
_GSM_RE = re.compile(r"####\s*([^\n]+)")
# 'answer is', 'answer will be', 'Answer:', 'final answer is', and 'Answer $ 5 $' (a math span right
# after the word)
_ANSWER_RE = re.compile(r"answer(?=\s*(?:\*\*\s*)?(?:is\b|will be\b|:|\$|\\\(|\\\[))", re.IGNORECASE)
_ANSWER_LEAD_RE = re.compile(r"answer\s*(?:\*\*\s*)?(?:(?:is|will be)\s*:?|:)?\s*(?:\*\*\s*)?", re.IGNORECASE)
# a number not glued to a word ('user123', 'x2' are names, not answers), nor a piece of a longer run
# of digits and dots or colons ('19.13.13' and the time '12:00' hold no number 13 or 00)
_NUMBER_RE = re.compile(r"(?<![A-Za-z_\d])(?<!\d[.:])-?\d[\d,]*(?:\.\d+)?(?!\d|[.:]\d)(?:\s*/\s*\d+)?")
# 'minus 5' and 'negative 5' are -5: the sign word right before a number, when no number or ')'
# comes before it ('20 minus 5' is an operation)
_SIGN_WORD_RE = re.compile(r"(?:^|[^\s\d)])\s*\b(minus|negative)\s+$", re.IGNORECASE)
# LaTeX written without $ ('2\\sqrt{3}', '\\frac{\\pi}{4}', '\\pi/4'), and numbers listed before a number
_BARE_TEX_RE = re.compile(r"(?<![\\\w])-?(?:\d+\s*)?\\(?:[dt]?frac|sqrt|pi)(?![A-Za-z])"
                          r"(?:\s*(?:\{(?:[^{}]|\{[^{}]*\})*\}|\[[^\]]*\]|\d))*(?:\s*[/^]\s*(?:\d+|\{[^{}]*\}))?")
_LIST_BEFORE_RE = re.compile(r"(?<![\w.,=])(?:(?:[A-Za-z]\s*=\s*)?-?\d+(?:,\d{3})*(?:\.\d+)?"
                             r"\s*(?:,\s*(?:and\s+)?|\s+(?:and|or)\s+))+(?:[A-Za-z]\s*=\s*)?$")
# a value kept before a value set aside: 'It is 14, not 13', '14 rather than 13', '14 instead of 13'
_CONTRAST_BEFORE_RE = re.compile(
    r"(\$[^$]+\$|(?:-?\d+\s*)?\\[dt]?frac\s*\{[^{}]*\}\s*\{[^{}]*\}|-?\d+(?:,\d{3})*(?:\.\d+)?(?:/\d+)?)"
    r"(?:\s+[A-Za-z]+){0,3}"
    r"(?:\s*[,(]?\s*(?:and\s+)?(?:not|rather\s+than|instead\s+of)|\s*,\s*(?:more|less|fewer|greater|smaller|larger|higher"
    r"|lower)\s+than)\s+(?:the\s+)?$", re.IGNORECASE)
# numbers in words, zero to a hundred, and their negatives ('forty-two', 'negative five')
_ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
         "fifteen sixteen seventeen eighteen nineteen").split()
_TENS = "twenty thirty forty fifty sixty seventy eighty ninety".split()
_SPELLED_RE = re.compile(r"\b(?:(minus|negative)\s+)?(?:(?:one|a)\s+(hundred)|(%s)(?:[\s-](%s))?|(%s))\b"
                         % ("|".join(_TENS), "|".join(_ONES[1:10]), "|".join(_ONES)), re.IGNORECASE)


def _spelled(s):
    """s with its numbers in words written in digits: 'negative forty-two apples' -> '-42 apples'."""
    def digits(m):
        sign, hundred, tens, ones, alone = (g and g.lower() for g in m.groups())
        value = (100 if hundred else 20 + 10 * _TENS.index(tens) + (_ONES.index(ones) if ones else 0)
                 if tens else _ONES.index(alone))
        return ("-" if sign else "") + str(value)
    return _SPELLED_RE.sub(digits, s)


_MATH_SPAN_RE = re.compile(r"\$\$((?:[^$\\]|\\.)+)\$\$|\$((?:[^$\\]|\\.)+)\$|\\\((.+?)\\\)|\\\[(.+?)\\\]",
                           re.DOTALL)
# ', which is 13' and ', which is simply 13' go on with the answer's value (a relation in words);
# ', which is the sum' ends it
_SENTENCE_END_RE = re.compile(r"(?<!\bi\.e)(?<!\be\.g)\.(?:\s|$)|;|\n|\s(?:because|since|where|I hope)\s|<\|"
                              r"|\swhich\s(?!(?:is|equals|gives|makes)\s+(?:[a-z]+\s+)?(?:equal\s+to\s+)?[-+\d$\\(])")
_CONNECTORS_RE = re.compile(r"[\s,;.\"'`\\*]*(?:(?:and|or)[\s,;.\"'`\\*]*)*")
_VERB_RE = re.compile(r"\s(?:is|are|equals|was|will be|would be)\s")
# a trailing signature line ('-- bob', 'Solution by user42', '[Author: ...]') is not the answer
_SIGNATURE_RE = re.compile(
    r"\n[ \t]*(?:[-\u2014\u2013~]{1,3}[ \t]*[A-Za-z@][^\n]{0,60}"
    r"|(?:solution |posted |written |proposed |submitted |edit(?:ed)? )?by:?[ \t]+[A-Za-z@][^\n]{0,60}"
    r"|@\w[^\n]{0,60}|\[?(?:author|source|credits?)\b[^\n]{0,80})[ \t]*$", re.IGNORECASE)
_STOP_WORDS_RE = re.compile(r"\b(?:wait|but|actually|however|instead|no|not|mistake|wrong|correct|check"
                            r"|final|answer|therefore|thus|hence|so|then|next|now|step)\b", re.IGNORECASE)
_BRACE_RE = re.compile(r"\\.|[{}]", re.DOTALL)
_DOUBLED_RE = re.compile(r"\\\\(?=[A-Za-z{}%$])")


def _braced(text, start):
    """Content of the {...} group opening at text[start], or None if it never closes.

    The scan stops after 10 answer-lengths: a longer group comes back cut, as a too-long answer."""
    depth, stop = 0, start + MAX_ANSWER_CHARS * 10 + 2
    for m in _BRACE_RE.finditer(text, start, min(stop, len(text))):
        tok = m.group()
        if tok == "{":
            depth += 1
        elif tok == "}":
            depth -= 1
            if depth == 0:
                return text[start + 1:m.start()]
    return text[start + 1:stop] if len(text) > stop else None


def _boxes(text):
    """[(start, end, content)] of the closed \\boxed{...} / \\fbox{...} (or '\\boxed 5'), in order.

    Only the last 20 are read; an unclosed one (truncated output) is skipped."""
    found = []
    for m in list(_BOX_RE.finditer(text))[-20:]:
        j = m.end()
        while j < len(text) and text[j] == " ":
            j += 1
        if j < len(text) and text[j] == "{":
            inner = _braced(text, j)
            if inner is not None:
                found.append((m.start(), j + len(inner) + 2, inner))
        elif j > m.end():  # '\boxed 5' (TeX allows an unbraced argument)
            arg = re.match(r"[^\s$]+", text[j:j + MAX_ANSWER_CHARS])
            if arg:
                found.append((m.start(), j + arg.end(), arg.group()))
    return found


def _final_boxes(text):
    """(content, end, start) of the answer given in boxes: the last box together with the boxes just
    before it ('\\boxed{1} and \\boxed{2}' is the answer '1, 2'), or None without a box.

    Boxes further back, or behind a sentence end or a 'wait'/'so', are earlier steps."""
    boxes = _boxes(text)
    if not boxes:
        return None
    group = [boxes[-1]]
    for box in reversed(boxes[:-1]):
        gap = text[box[1]:group[0][0]]
        if len(gap) > 80 or re.search(r"[.!?](?:\s|$)", gap) or _STOP_WORDS_RE.search(gap) \
                or (re.search(r"\n\s*\n", gap) and re.search(r"[A-Za-z]", gap)):
            break  # a blank line with words in between: a new step, not the same answer
        group.insert(0, box)
    contents = []
    for _, _, content in group:  # the same box written twice is one answer; an empty one is none
        if content.strip() and content.strip() not in contents:
            contents.append(content.strip())
    return ", ".join(contents), group[-1][1], group[0][0]


def _boxed_answer(text):
    """(answer, start, end) of the final boxes (_final_boxes; start and end bound them and a chain
    that continues them), read with what a model writes around a box:
    an empty box stands for the answer beside it ('\\boxed{} 13', '\\boxed{}, which is 13') or,
    with nothing beside it, for the answer the text committed to before it (_committed_before; none
    is no answer, ''), and a box that '=' continues is the first side of a worked chain
    ('\\boxed{m + 3} = 10 + 3 = 13' is that chain). None without a box."""
    boxed = _final_boxes(text)
    if boxed is None:
        return None
    content, end, start = boxed
    after = text[end:end + MAX_ANSWER_CHARS]
    if not content:  # the answer beside it, or a chain the sentence beside it ends in
        beside = _clean_phrase(re.sub(r"^[\s$]*[,:;]?", "", after))
        if not _is_math(beside) and "=" in beside:
            beside = _chain_at(beside, beside.rfind("="))
        return (beside if _is_math(beside) else _committed_before(text[:start])), start, end
    if re.match(r"[\s$]*=(?!=)", after):
        cut = _SENTENCE_END_RE.search(_mask_math(after))
        chain = after[:cut.start() if cut else len(after)]
        if _is_math(chain.replace("$", " ")) and "=" not in content:
            return content + " " + chain.replace("$", " ").strip(), start, end + len(chain.rstrip())
    return content, start, end


def _committed_before(text):
    """The answer sentence or, without one, the last worked chain before an empty box with nothing
    beside it ('13 - 12 = 1. The answer is \\boxed{}.', 'The answer is 0. To keep it in \\boxed{},
    ...'): the value the text committed to; '' when none ('Evaluating 9 - 4 yields \\boxed{}.' has
    no answer anywhere, and its last number is the question's)."""
    text = text[-MAX_ANSWER_CHARS:]
    said = _said_answer(text)
    if said and _is_math(said[0]):
        return said[0]
    equals = _mask_math(text).rfind("=")
    return _chain_at(text, equals) if equals >= 0 else ""


def _chain_at(text, equals):
    """The worked chain around the '=' at text[equals]: the math on both sides of it, up to the
    words around ('so 13 - 12 = 1 in' -> '13 - 12 = 1'); '' when its last side is no number."""
    left = _TRAILING_MATH_RE.search(text, max(0, equals - MAX_ANSWER_CHARS), equals)
    right = _LEADING_MATH_RE.match(text, equals + 1)
    chain = ((left.group() if left else "") + "=" + (right.group() if right else "")).strip(" \t,")
    return chain if re.search(r"\d", chain.split("=")[0]) and _is_math(chain.split("=")[-1]) else ""


def _mask_math(s):
    """s with its math spans blanked out (same length), so their '.' or ' is ' are not prose."""
    return _MATH_SPAN_RE.sub(lambda m: "$" + "#" * (len(m.group()) - 2) + "$", s)


def _span_text(m):
    return next(g for g in m.groups() if g is not None).strip()


# ----------------------------------------------------------------------------- answers said in words
# A small model says its answer in a sentence more often than in a box. Each rule below reads one way
# of saying it ('9 + 4 is 13', 'The answer is indeed 13', '13 when m = 10', '"9 + 4 = 13"') into the
# bare answer, or returns None; _unsay applies them until none does. They only ever drop words
# around an answer, never guess one: what is left must still read as math (_is_math), and a number
# is never taken out of a longer one, so '3m + 13', '19.13.13' and 'm + 3 is 2m + 13' stay what they
# are. They read completions only: a gold answer is never rewritten.
# words that affirm an answer without changing it ('the answer is actually 13'); 'not', 'about',
# 'over', 'negative' and the like change it and are not here
_AFFIRMING = ("actually indeed simply just really clearly obviously exactly precisely definitely certainly "
              "surely still also now then therefore thus hence so basically truly correctly finally again")
_AFFIRMING_RE = re.compile(r"(?:%s)\b[\s,:]*(?=\S)" % "|".join(_AFFIRMING.split()), re.IGNORECASE)
# a clause after the answer that says when or why it holds: '13 when m = 10', '13, as 9 + 4 = 13'
_CONDITION_RE = re.compile(r",?\s(?:when|if|where|for|with|given|provided)\s+(?=\S)|,\s+as\s+(?=\S)")
# a relation in words: what follows it is the value ('9 + 4 is 13', 'which equals 13', 'is 13')
_RELATION_WORDS_RE = re.compile(r"(?:^|\s)(?:is|equals|is equal to|gives|makes|yields"
                                r"|(?:will|would)(?: always)? (?:be|equal))\s+")
# one answer said twice: '9 + 4 = 13, so 9 + 4 = 13', '... and 9 + 4 = 13', '13. 13'
_RESTATED_RE = re.compile(r"[,;.]\s+(?:(?:(?:so|and|or|that is|thus|hence|therefore|then|equivalently)\b|i\.e\.)"
                          r"[\s,:]*)*"
                          r"|(?<!\s)\s+(?:(?:so|and|or|thus|hence|therefore|then)\b|i\.e\.)\s+")
_QUOTED_RE = re.compile(r"[\"'`\u201c\u2018]+([^\"'`\u201c\u201d\u2018\u2019]+?)[\"'`\u201d\u2019]+[.!]?")
# a word that is not math: two letters or more, and no TeX command, function name or Greek letter
_MATH_WORD_RE = re.compile(r"(?<![\\A-Za-z])(?!(?:%s|pi|sqrt|infty)(?![A-Za-z]))[A-Za-z]{2,}"
                           % "|".join(sorted(_NAMED_FUNCS | _GREEK, key=len, reverse=True)))


def _is_math(s):
    """Whether s reads as a math answer: a digit in it, and no word but (at the end) the thing
    counted or its unit ('13 units'), which _clean_unit sets aside."""
    words = list(_MATH_WORD_RE.finditer(s))
    return (bool(s.strip()) and len(s) <= MAX_ANSWER_CHARS and re.search(r"\d", s) is not None
            and (not words or (len(words) == 1 and not s[words[0].end():].strip(" .!"))))


def _quoted(s):
    """'"9 + 4 = 13"': an answer in quotes."""
    m = _QUOTED_RE.fullmatch(s)
    return m.group(1) if m else None


def _affirmed(s):
    """'actually 9 + 4 = 13', 'indeed 13': a word that affirms the answer, before it."""
    m = _AFFIRMING_RE.match(s)
    return s[m.end():] if m else None


def _conditioned(s):
    """'13 when m = 10', '0, as 387 * 0 = 0': the answer, then when or why it holds."""
    m = _CONDITION_RE.search(s)
    if m and re.search(r"\b(?:otherwise|else)\b", s[m.end():]):
        return None  # '13 if x = 2, and 14 otherwise': two answers, by cases
    return s[:m.start()] if m and _is_math(s[:m.start()]) else None


# a reason or a contrast in brackets after an answer: '20 (since 4 x 5 = 20)', '20 (not 25, as 5 were eaten)'
_ASIDE = (r"\s*\((?:since|because|as|from|after|by|using|i\.e\.|e\.g\.|that\s+is|excluding|including|counting"
          r"|not\b(?!\s+(?:sure|certain|confident|100)))[^()]*\)")


def _remarked(s):
    """'15 + 10 = 25, but in mathematics,', '0, as expected', '13 (thirteen)', '0.5 as a decimal': a
    remark after the answer that holds no number (one that does may correct it: '13, but actually
    14' is left as it is), or a reason in brackets ('20 (since 4 x 5 = 20)', '20 (not 25, ...)');
    '169, the square of 13': a description of it."""
    m = (re.fullmatch(r"(.*?\d[^,;]*)[,;]\s*(?:but|and|which|that|this|so|in|for|of)\b[^\d]*", s)
         or re.fullmatch(r"(.*?\d[^,;]*),\s*(?:the|its)\s+[A-Za-z][^;]*", s))
    if m and _is_math(m.group(1)):
        return m.group(1)
    m = re.fullmatch(r"(.*?\d[^(]*?)%s[.!]?" % _ASIDE, s, re.IGNORECASE)  # '20 (since 4 x 5 = 20)'
    if m and _is_math(m.group(1)):
        return m.group(1)
    m = re.fullmatch(r"(.*?\d[^(]*?)\s*(?:\((?![^)]*(?:approx|about|around|rough|near|almost|least|most|more|less"
                     r"|\bor\b|maybe|perhaps|possibl|\bnot\b|estimat))\s*[A-Za-z]{3,}[A-Za-z\s,]*\)"
                     r"|as\s+an?\s+(?:decimal|fraction|percentage|integer)"
                     r"|in\s+(?:lowest\s+terms|simplest\s+form|words))", s)
    return m.group(1) if m else None


def _restated(s):
    """'9 + 4 = 13, so 9 + 4 = 13': an answer said again is one answer, when every saying commits to
    the same value (said with two values it is left as it is, and is refused)."""
    s = re.sub(r"\s+\(([^()]*\d[^()]*)\)[.!]?$", r", \1", s)  # 'thirteen (13)' says it twice
    parts = [_spelled(p.strip(" .")) for p in _RESTATED_RE.split(s)]  # '91, i.e. ninety-one'
    if len(parts) < 2 or not all(_is_math(p) for p in parts):
        return None
    values = [" ".join(_last_side_of_arithmetic(_TIMES_X_RE.sub(" * ", p)).split()) for p in parts]
    return parts[-1] if all(_same_number(v, values[0]) for v in values) else None


def _stated_value(s):
    """'9 + 4 is 13', 'm + 3 is 13', ', which equals 13': a relation in words states the value after
    its last verb (as 'the volume of $ABCD$ is 120' does), when that value is math. Said of plain
    arithmetic it is a worked chain ('9 + 4 is 13' is '9 + 4 = 13'), so a false one ('822, which
    is 0') states nothing (_false_chain)."""
    last = None
    for last in _RELATION_WORDS_RE.finditer(s):
        pass
    value = last and (_affirmed(s[last.end():]) or s[last.end():])  # 'is indeed 37'
    if not value or not _is_math(value):
        return None
    said = re.sub(r"[\s,]*(?:\b(?:which|that|this|it)\b)?[\s,]*$", "", s[:last.start()])
    if re.search(r"\d", said) and _ARITHMETIC_RE.fullmatch(said):
        return said + " = " + value
    return value


def _contrasted(s):
    """'14, not 13', '14 rather than 13', '14 instead of 13', 'not 13 but 14': the value kept."""
    m = _CONTRAST_RE.fullmatch(s)
    kept = m and (m.group(1) or m.group(2))
    return kept if kept and _is_math(kept) else None


_CONTRAST_RE = re.compile(r"(.+?)\s*[,(]?\s*(?:and\s+)?(?:not|rather\s+than|instead\s+of)\s+[^,;()]+\)?"
                          r"|not\s+[^,;:]+?\s*[,;:]?\s*(?:but|it\s+is|it's)\s+(.+)", re.IGNORECASE)
_SAYINGS = [_quoted, _affirmed, _conditioned, _remarked, _restated, _contrasted, _stated_value]


def _unsay(s):
    """s with the words around its answer read away by the rules of _SAYINGS."""
    s = s.strip()
    for _ in range(2 * len(_SAYINGS)):
        for rule in _SAYINGS:
            out = rule(s)
            if out is not None and out.strip() and out.strip() != s:
                s = out.strip()
                break
        else:
            break
    return s


def _clean_phrase(phrase):
    """Trim what follows 'the answer is' down to the answer: 'The largest $n$ is 34. I hope it
    is correct.' -> '34'; '$ 5 $' -> '5'; '$12$ and $13$' -> '12, 13'; 'Jane started 3 hours
    ago' -> '3'."""
    phrase = re.sub(r"^(?:\\?[\"'`]|\s)+", "", phrase[:MAX_ANSWER_CHARS])  # the cut keeps it linear
    masked = _mask_math(phrase)  # a '.' or a line break inside $...$ does not end the sentence
    cut = _SENTENCE_END_RE.search(masked)
    if cut:
        phrase, masked = phrase[:cut.start()], masked[:cut.start()]
    cut = _REVISION_RE.search(masked, 1)  # '13, scratch that, 31': the answer said, then a second thought
    if cut:
        phrase, masked = phrase[:cut.start()], masked[:cut.start()]
    unsaid = _unsay(phrase)  # 'actually 13', '13 when m = 10', '10 + 5, which equals 6'
    if unsaid != phrase.strip():
        phrase, masked = unsaid, _mask_math(unsaid)
    verbs = list(_VERB_RE.finditer(masked))
    if verbs:  # 'The volume of $ABCD$ is 120': the part after the last 'is'
        phrase, masked = phrase[verbs[-1].end():], masked[verbs[-1].end():]
    spans = list(_MATH_SPAN_RE.finditer(phrase))
    if spans and _CONNECTORS_RE.fullmatch(_MATH_SPAN_RE.sub(" ", phrase)):
        return ", ".join(_span_text(m) for m in spans)  # only math: '$12$ and $13$'
    plain = phrase.replace("$", " ").replace("\\(", " ").replace("\\)", " ")
    plain = re.sub(r"^[\s*.:,\"'`]+|[\s*.:,\\\"'`]+$", "", plain)  # a TeX command's backslash stays
    if not _PROSE_RE.search(plain):
        return plain
    if spans:
        return _span_text(spans[-1])
    numbers = _NUMBER_RE.findall(masked)
    if len(numbers) == 1:  # prose around one number: the number
        return numbers[0].strip(",")
    return plain


def _said_answer(text):
    """(answer, where, final, start, end) of the last 'answer is ...' / 'Answer: ...' / 'Answer
    $...$', or of the last '13 is the answer' / '..., which is the final answer' if it comes later;
    or None. where is the position of the word 'answer', final tells whether it said 'final
    answer', and the answer stands in text[start:end]."""
    before = None
    for word in re.finditer(r"answer\b", text, re.IGNORECASE):  # the word first: a literal is fast
        window = max(0, word.start() - 40)
        said = _ANSWER_AFTER_RE.search(text, window, word.end())
        before = said if said and said.end() == word.end() else before
    for last in reversed(list(_ANSWER_RE.finditer(text))[-3:]):
        if before is not None and before.start() > last.start():
            break
        if re.search(r"(?:check|verify|confirm|test)\w*\s+(?:\w+\s+)?$", text[max(0, last.start() - 30):last.start()],
                     re.IGNORECASE):
            continue  # 'We may check our answer: ...' states none
        lead = _ANSWER_LEAD_RE.match(text, last.start())
        phrase = text[lead.end():lead.end() + MAX_ANSWER_CHARS]
        answer = _clean_phrase(phrase)
        if _JUDGING_RE.match(answer) and not re.search(r"[\d$\\]", answer):
            continue  # 'The answer is correct.': a judgement, not an answer; an earlier one may be
        final = re.search(r"final\W{0,3}$", text[max(0, last.start() - 12):last.start()], re.I) is not None
        cut = _SENTENCE_END_RE.search(_mask_math(phrase))
        start, end = _locate(text, answer, lead.end(), lead.end() + (cut.start() if cut else len(phrase)))
        return (answer, last.start(), final, start, end) if answer else None
    return _said_before(text, before) if before is not None else None


def _locate(text, answer, lo, hi):
    """(start, end) of answer in text[lo:hi]: where it is written, or from its first to its last
    number when the reading rewrote it ('7 + 5 is 12' read as '7 + 5 = 12'); else (lo, hi)."""
    at = text.find(answer, lo, hi)
    if at >= 0:
        return at, at + len(answer)
    numbers = re.findall(r"\d+", answer)
    first = text.find(numbers[0], lo, hi) if numbers else -1
    last = text.rfind(numbers[-1], max(first, lo), hi) if numbers else -1
    return (first, last + len(numbers[-1])) if 0 <= first <= last else (lo, hi)


# words that approve of an answer or point elsewhere, and so give none: 'The answer is correct.', 'the
# final answer is determined by the initial conditions', 'the answer is shown below' (said with no
# number). Not doubt: 'the answer is tricky', 'is not clear' may come before another answer
_JUDGING_RE = re.compile(r"(?:correct|right|accurate|precise|valid|simple|easy|straightforward|clear"
                         r"|obvious|below|above|as follows|shown|given|determined|(?:just )?as expected"
                         r"|the result|the same|already|in)\b", re.IGNORECASE)


# the answer said before the words that call it the answer: '13 is the answer', '9 + 4 = 13, which is
# the final answer' (not 'which is not the answer', nor 'the wrong answer')
_ANSWER_AFTER_RE = re.compile(r"\b(?:(?:which|this|that|it)\s+)?(?:is|was)\s+(?:the|my|our)\s+"
                              r"(?:(final)\s+|correct\s+|right\s+)?answer\b", re.IGNORECASE)
# the math a clause ends in, or (without '=') begins with: numbers, operators (also '\\times', '×'),
# one-letter names and math spans ('to get 13', '= 1 in')
_MATH_RUN = (r"(?:\$[^$\n]*\$|\\\(.*?\\\)|\\(?:times|cdot|div)(?![A-Za-z])|[-+*/^(),\d \t\u00d7\u00f7\u00b7%s]|\.(?=\d)"
             r"|(?<![A-Za-z\\])[A-Za-z](?![A-Za-z]))+")
_TRAILING_MATH_RE = re.compile(_MATH_RUN % "=" + "$")
_LEADING_MATH_RE = re.compile(_MATH_RUN % "")


def _said_before(text, words):
    """(answer, where, final, start, end) for the math the clause before `words` ends in, or None."""
    lo = max(0, words.start() - MAX_ANSWER_CHARS)
    ends = list(_SENTENCE_END_RE.finditer(_mask_math(text[lo:words.start()])))
    lo += ends[-1].end() if ends else 0
    tail = _TRAILING_MATH_RE.search(text, lo, words.start())
    answer = tail.group().strip(" ,.") if tail else ""
    answer = _clean_phrase(answer) if re.search(r"\d", answer) else ""
    if not answer:
        return None
    return (answer, words.start(), words.group(1) is not None) + _locate(text, answer, tail.start(), tail.end())


def _whole_math(text):
    """The content when the whole text is one math span ('$$f(y) = y$$', '\\(x\\)'), else None."""
    t = text.strip()
    if len(t) > MAX_ANSWER_CHARS or not t.startswith(("$", "\\(", "\\[")):
        return None
    m = _MATH_SPAN_RE.fullmatch(t)
    return _span_text(m) if m and _span_text(m) else None


# an answer and where it stands in the text it was read from: text[start:end]
Found = namedtuple("Found", "answer start end")


def extract_answer(text):
    """The final answer a completion (or a GSM8K/MATH gold field) commits to, or None: the value a
    later sentence replaces it with, none when one takes it back (_revised)."""
    if not isinstance(text, str) or not text.strip():
        return None
    text = _prepared(text)
    found = _find_answer(text)
    found = found and _revised(text, found)
    return found.answer if found else None


def _prepared(text):
    """text as the readers expect it: '\\\\frac' escaped twice is '\\frac'; the minus sign '\u2212' is
    '-'; a dash between words is a comma ('14 \u2014 not 13', '13 -- scratch that -- 31'; a dash that
    starts a line may sign it); '-$10' is '$-10'; and numbers in words are digits when the text has
    no digit ('The answer is thirteen, not twelve.')."""
    text = _DOUBLED_RE.sub(r"\\", text) if "\\\\" in text and "\\begin" not in text else text
    if "\u2212" in text:
        text = text.replace("\u2212", "-")
    if "\u2014" in text or "--" in text or " \u2013 " in text:
        text = _DASH_RE.sub(", ", text)
    if "-$" in text or "-\\$" in text:
        text = _SIGNED_DOLLARS_RE.sub(r"\1\2-", text)
    return text if re.search(r"\d", text) else _spelled(text)


_DASH_RE = re.compile(r"(?<=\S)[ \t]*(?:\u2014+|(?<!-)--(?![-\d])| \u2013(?= ))[ \t]*")
# a sign before a dollar sign, when no number or ')' comes before it: '-$10' is '$-10' ('$15 -$10' is an operation)
_SIGNED_DOLLARS_RE = re.compile(r"((?:^|[^\s\d)$])\s*)-\s*(\\?\$)(?=\s*\d)")


def _find_answer(text):
    """The final answer of text as a Found, or None: the last boxes, unless an answer sentence
    comes after them; GSM8K's '#### x'; the answer sentence; the whole text when it is one answer;
    else the last number or math span."""
    boxed = _boxed_answer(text)
    if boxed is not None:  # an answer sentence after the boxes replaces them
        said = _said_answer(text) if re.search("answer", text[boxed[2]:], re.IGNORECASE) else None
        if said and said[1] >= boxed[2] and re.search(r"[\d\\]", said[0]) and not _PROSE_RE.search(said[0]):
            return Found(said[0], said[3], said[4])
        return Found(*boxed)
    said = _said_answer(text)
    gsm = list(_GSM_RE.finditer(text))
    if gsm:  # commas only as thousands separators: '#### 1,3' is no number
        value = gsm[-1].group(1).strip()
        number = re.sub(r",(?=\d)", ", ", _THOUSANDS_RE.sub(lambda m: m.group().replace(",", ""), value))
        return Found(number,
                     gsm[-1].start(1), gsm[-1].start(1) + len(value))
    if said:
        return Found(said[0], said[3], said[4])
    whole = _whole_math(text)
    if whole:  # the whole text is one math span: '$$f(y) = y$$'
        return Found(whole, 0, len(text))
    bare = text.strip().strip("$").strip()
    if _looks_bare(bare):  # the whole text is the answer: '\\frac{1}{2}', 'x = 3', '(B)', '9 + 4 is 13'
        answer = _unsay(bare)
        return Found(answer, *_locate(text, answer, 0, len(text)))
    return _last_value(text, bare)


def _last_value(text, bare):
    """Found for the last number, or the last math span or LaTeX if it ends later ('is $(7, 6)$.'),
    of a text with no marked answer, read with the words around it: a list ('12, 13 and 14'), a worked
    chain ('... = 13'), a sign word ('minus 5'), the value kept in a contrast ('It is 14, not 13.'); a
    number in words when the text has no digit ('It is seven.')."""
    base = max(0, len(text) - 2 * MAX_ANSWER_CHARS)
    tail = text[base:]
    for _ in range(3):
        tail = _SIGNATURE_RE.sub("", tail.rstrip())
    tail = _DESCRIBED_RE.sub("", tail)  # '... is 17, which is the sum of 12 and 5.': 17
    tail = re.sub(_ASIDE + r"(?=[.!]?\s*$)", "", tail, flags=re.IGNORECASE)  # '20 apples (not 25, ...).'
    check = re.search(r"\s*\(([^()]*=[^()]*)\)(?=[.!]?\s*$)", tail)  # '20 apples (25 - 5 = 20).': a check
    said = check and list(_NUMBER_RE.finditer(tail, 0, check.start()))
    if said and _same_number(said[-1].group(), _last_side_of_arithmetic(_clean(check.group(1)))):
        tail = tail[:check.start()]
    numbers = list(_NUMBER_RE.finditer(tail))
    spans = [m for m in _MATH_SPAN_RE.finditer(tail)
             if re.search(r"[\d\\]", _span_text(m)) and not _PROSE_RE.search(_span_text(m))]
    tex = list(_BARE_TEX_RE.finditer(tail))
    found = None
    if spans and (not numbers or spans[-1].end() >= numbers[-1].end()):
        group = [spans[-1]]  # '$x = -2$ and $x = 3$' is one answer
        for m in reversed(spans[:-1]):
            if not _CONNECTORS_RE.fullmatch(tail, m.end(), group[0].start()) or not all(
                    re.fullmatch(r"(?:[A-Za-z]\s*=)?[^=]*", _span_text(x)) for x in (m, group[0])):
                break
            group.insert(0, m)
        found = Found(", ".join(_span_text(m) for m in group), group[0].start(), group[-1].end())
    elif tex and (not numbers or tex[-1].end() >= numbers[-1].end()):  # LaTeX without $: 'is \\frac{1}{2}.'
        found = Found(tex[-1].group(), tex[-1].start(), tex[-1].end())
    elif numbers:
        last = numbers[-1]
        value, start, end = last.group().strip(",").replace(" ", ""), last.start(), last.end()
        listed = _LIST_BEFORE_RE.search(tail, max(0, start - MAX_ANSWER_CHARS), start)
        chain = re.search(r"=\s*$", tail[max(0, start - 20):start]) and _chain_at(tail, tail.rfind("=", 0, start))
        sign = _SIGN_WORD_RE.search(tail, max(0, start - 40), start)
        word = _VALUE_WORDS_RE.match(tail, end + 1) if tail[end:end + 1] == " " else None  # '13 squared'
        if listed:  # '12, 13 and 14' is a list, '12 and 14' too
            value, start = tail[listed.start():end], listed.start()
        elif chain:  # '... so 12 + 0 = 13': the chain, which may be false
            value, start = chain, tail.rfind(chain.split("=")[0].strip(), 0, start)
        elif sign and not value.startswith("-"):  # 'minus 5' is -5 ('20 minus 5' is no sign)
            value, start = "-" + value, sign.start(1)
        if word:
            value, end = value + " " + word.group(), word.end()
        found = Found(value, start, end)
    if found:
        kept = _CONTRAST_BEFORE_RE.search(tail, max(0, found.start - 120), found.start)
        if kept:  # 'It is 14, not 13.': 14
            m = _MATH_SPAN_RE.fullmatch(kept.group(1))
            found = Found(_span_text(m) if m else kept.group(1), kept.start(1), kept.end(1))
        return Found(found.answer, base + found.start, base + found.end)
    spans = [m for m in _MATH_SPAN_RE.finditer(tail) if not _PROSE_RE.search(_span_text(m))]
    if spans:  # no number anywhere: the last math span ('so we get $p - q$')
        return Found(_span_text(spans[-1]), base + spans[-1].start(), base + spans[-1].end())
    if re.fullmatch(r"[A-Za-z]{2,20}", bare):  # one word: 'False', 'Evelyn'
        return Found(bare, 0, len(text))
    return None


_PROSE_RE = re.compile(r"(?<!\\)\b[A-Za-z]{3,}\s+[A-Za-z]{2,}\b")
# a last clause that describes the value just stated ('17, which is the sum of 12 and 5.')
_DESCRIBED_RE = re.compile(r"(?:,\s*|(?<![\s,])\s+)which\s+(?:is|was|are)\s+(?:the|a|an|its|their|our|my)\s[^.\n;]*[.!]?\s*$",
                           re.IGNORECASE)


_WORDS_RE = re.compile(r"(?<![\\A-Za-z])[A-Za-z]{2,}\s+[A-Za-z]{2,}(?![A-Za-z])")  # 'so we get'
_STRAY_WORD_RE = re.compile(r"(?<![\\{A-Za-z])(?!(?:%s)\b)[A-Za-z]{4,}(?![A-Za-z}(])" % _UNIT_WORDS)


def _looks_bare(s):
    """A short one-line answer with no prose in it (so not the last number of a sentence, nor
    'Total: 15', whose answer is its number, nor sentences: 'So x = 5. So x = 6')."""
    return (0 < len(s) <= 400 and "\n" not in s and not _PROSE_RE.search(s) and not re.search(r"[.!?]\s+[A-Z]|\w'\w", s)
            and (len(s) <= 3 or re.search(r"[\d\\=+\-*/^_()]", s) is not None)
            and not _STRAY_WORD_RE.search(s) and not _WORDS_RE.search(s))

# ----------------------------------------------------------------------------- commitment
# A completion earns 1 only when it commits to exactly one final value. _find_answer finds the value
# a text ends on; _committed reads what the text says around it, which can take the commitment away:
#   retracted  a later sentence takes it back ('Wait', 'That is wrong.'); a value after that
#              replaces it, and without one nothing is left (_revised)
#   cut off    a repetition loop that stops on another value ('= 13', '= 13', then '= 1')
#   negated    'not 13', 'cannot be 13', 'the wrong answer is 13', '13 is wrong'
#   bound      'less than 13', 'at least 13', '13 or more', 'nearly 13', 'x > 13'
#   operation  an operation in words: 'twice 13', 'half of 13', '20 plus 16', '13 squared'
#   hedged     two or more candidates: '12 or 13', 'between 12 and 14', '12 to 14 days', 'maybe 5, maybe 6'
# Negations, retractions and loops count against every gold; bounds, operations in words and hedges
# against a gold that is one value (against '2, -2', 'x = 2 or x = -2' is an answer).

# the words an answer read from a sentence may still begin or end with: they are read with the
# words around it ('The answer is at least 13.': the answer read is 'at least 13')
_WORDS = (r"not|never|no|less|more|fewer|greater|smaller|larger|than|or|equal|to|at|least|most|up|over|under|above"
          r"|below|nearly|almost|about|approximately|around|roughly|close|between|and|twice|double|triple|half|of|the|a"
          r"|square|cube|root|sum|product|multiple|times|plus|squared|cubed|maybe|perhaps|possibly|so|thereabouts")
_LEADING_WORDS_RE = re.compile(r"\s*(?:(?:(?:%s)\b|[<>\u2264\u2265\u2248~]=?"
                               r"|\\(?:approx|sim|le|ge|leq|geq|lt|gt)(?![A-Za-z]))\s*)*" % _WORDS, re.IGNORECASE)
_TRAILING_WORDS_RE = re.compile(r"(?:\s*\b(?:%s))*[\s.]*$" % _WORDS, re.IGNORECASE)
# what a clause is cut at, on both sides of the answer
_CLAUSE_END = r"[.!?](?=\s|$)|[;:,\n]|\b(?:but|(?<!or\s)so|then|thus|hence|therefore|because|since|while|although)\b"
_CLAUSE_END_RE = re.compile(_CLAUSE_END)
_LAST_CLAUSE_END_RE = re.compile(r"(?s:.*)(?:%s)" % _CLAUSE_END)
# markup blanked out before the words around an answer are read (same length: positions hold)
_MARKUP_RE = re.compile(r"\\(?:boxed|fbox|text\w*|math\w+|operatorname)\s*\{|\\[()\[\]$]|\\(?:left|right)\b|[$*{}`]")
_NEGATED_BEFORE_RE = re.compile(r"\b(?:not|never|cannot|nor|neither|no\s+way|wrong|incorrect|false|mistaken|invalid"
                                r"|(?:trap|distractor|decoy|tempting)\s+(?:answer|value|choice|option|result)"
                                r"|rule[sd]?\s+out|other\s+than|instead\s+of|rather\s+than)\b|n't\b")
_NEGATED_AFTER_RE = re.compile(
    r"^\s*(?:(?:is|was|would\s+be|will\s+be|must\s+be|might\s+be|seems?|appears?|looks?)\s+)?(?:not|wrong|incorrect"
    r"|false|impossible|invalid|off\s+by|too\s+(?:high|low|big|small|large|many|few|much|little)"
    r"|(?:a|an|the|my|our)\s+(?:\w+\s+)?(?:wrong|incorrect|mistaken|false|invalid|mistake|error|trap|distractor"
    r"|decoy|red\s+herring|pitfall|misconception|typo))\b"
    r"|^\s*(?:is|was|are)n't\b|^\s*(?:can't|cannot)\b")
_BOUND_BEFORE_RE = re.compile(
    r"(?:(?<![\\\w])(?:(?:less|more|fewer|greater|smaller|larger|bigger|higher|lower)\s+than(?:\s+or\s+equal\s+to)?"
    r"|at\s+(?:the\s+)?(?:very\s+)?(?:least|most|minimum|maximum)|up\s+to"
    r"|(?:is|are|be|was|were|needs?|needed|requires?|required|takes?)\s+a\s+(?:minimum|maximum)\s+of"
    r"|no\s+(?:more|less|fewer|greater|smaller)\s+than|(?:just\s+|slightly\s+|well\s+)?"
    r"(?:over|under|above|below|beyond)|nearly|almost|about|approximately|approx\.?|around|roughly|close\s+to|near"
    r"|within|exceed(?:s|ing)?|upwards\s+of|in\s+excess\s+of"
    r"|(?:somewhere|anywhere)\s+(?:from|between)\s+\S+\s+(?:to|and)"
    r"|between(?:\s+\S+\s+and)?)|[<>\u2264\u2265]=?|\\(?:le|ge|leq|geq|lt|gt|leqslant|geqslant)"
    r"|(?:(?<![\w)}\]\s])|(?<=[a-z]{2}))\s*(?:\u2248|~|\\approx|\\sim))\s*$")  # '\\approx' after a word, not in a chain
_BOUND_AFTER_RE = re.compile(
    r"^[\s(\[]*(?:\+(?!\s*\d)|(?:[a-z]+\s+)?(?:or\s+(?:more|less|fewer|greater|higher|lower|larger|smaller|above|below|over"
    r"|under|so)|and\s+(?:up|above|over|more|beyond|higher)|at\s+(?:the\s+)?(?:very\s+)?(?:most|least|minimum|maximum)"
    r"|max|min|tops|give\s+or\s+take)\b|(?:more|less|fewer|greater|smaller|larger|higher|lower)\s+than(?:\s+(?:[a-z]\b|[-\d\\(])|\s*$)|-?ish\b|[<>\u2264\u2265]|\\(?:le|ge|leq|geq|lt|gt)\b)")
_OPERATION_BEFORE_RE = re.compile(
    r"(?:\b(?:twice|double|triple|thrice|half(?:\s+of)?|(?:a|one|two|three|\d+)[\s-](?:halves|half|thirds?|quarters?"
    r"|fourths?|fifths?|tenths?)\s+of|(?:square|cube)\s+root\s+of|(?:square|cube|reciprocal|logarithm|log|factorial"
    r"|inverse|opposite|multiple|factor|divisor|power)s?\s+of"
    r"|(?:sum|product|difference|quotient|average|mean|total)\s+of(?:\s+[-\d.,/]+\s*(?:,|and|by))+"
    r"|times|plus|minus|divided\s+by|multiplied\s+by|over|mod|modulo|percent\s+of"
    r"|to\s+the\s+(?:\w+\s+)?power\s+of)|%\s+of|[\w)\]]\s*(?:[-+*/^\u00d7\u00f7]|\\(?:times|cdot|div))|\d\s*x)\s*$")
_OPERATION_AFTER_RE = re.compile(
    r"^\s*(?:(?:squared|cubed|factorial|times|plus|minus|divided|multiplied|percent\s+of"
    r"|to\s+the\s+(?:\w+\s+)?power|(?:thousand|million|billion|hundred|dozen)s?|and\s+a\s+half|halves|thirds"
    r"|quarters)\b|%\s+of\b|over\s+\d|!(?!=)|[-+*/^\u00d7\u00f7]\s*\d|\\(?:times|cdot|div)\b)")
# numbers a hedge joins ('12 or 13', '25, or it could be 26', 'maybe 5, maybe 6'), or a list joins
_HEDGE_NUMBER_RE = re.compile(r"-?(?:\d+\s*)?\\frac\s*\{\s*-?\d+\s*\}\s*\{\s*\d+\s*\}"
                              r"|-?\d+(?:,\d{3})*(?:\.\d+)?(?:/\d+)?")
_HEDGE_GAP_RE = re.compile(
    r"(?:\s+[A-Za-z]{2,})?[\s.,;:()\[\]{}]*\b(?:or|either|maybe|perhaps|possibly"
    r"|(?:but\s+)?(?:it\s+)?(?:may|might|could)\s+(?:also\s+|even\s+)?be)"
    r"(?:\s+(?:it|it's|is|be|could|might|may|the|answer|possibly|perhaps|maybe|even|also|just|else))*[\s()\[\]{}]*",
    re.IGNORECASE)
_LIST_GAP_RE = re.compile(r"[\s(){}]*(?:,\s*(?:and\s+)?|\s+and\s+)[\s(){}]*")
# a range: '12 to 14 days', '12–14', '12 through 14' (not a change 'from 12 to 14', 'round 13.6 to 14', nor
# a ratio '3 to 4')
_RANGE_GAP_RE = re.compile(r"\s*\u2013\s*|\s+(?:to|through|thru)\s+", re.IGNORECASE)
_NO_RANGE_BEFORE_RE = re.compile(r"\b(?:from|round(?:ed|s|ing)?|convert(?:ed|s|ing)?)\s+(?:\S+\s+)?$"
                                 r"|\b(?:ratio|odds|rate|scale)\b", re.IGNORECASE)
_HEDGE_WORD_RE = re.compile(r"\b(?:or|either|maybe|perhaps|possibly|may|might|could|answers|values|possibilities"
                            r"|options|candidates|choices)\b|\d\s*\u2013|\d\s+(?:to|through|thru)\s", re.IGNORECASE)
_CANDIDATES_RE = re.compile(r"\b(?:answers|values|possibilities|options|candidates|choices)\b")
# a sentence after the answer that takes it back: a judgement ('That is wrong.', 'No, ...') or a
# second thought ('Wait', 'Actually', 'On second thought')
_REVISION_RE = re.compile(
    r"(?:^|(?<=[.!?;:,\n(\u2013\u2014])|(?<=[.!?]\s)|(?<=\s-)|(?<=--))[\s*]*"
    r"(?:(?:but|and|so|though|oh|ah|uh|um|well|hold\s+on|okay|ok)\b[\s,!.]*)?(?:(no|nope)\b(?=\s*[,.!:;]|\s+wait)"
    r"|(wait|actually|hmm+|oops|scratch\s+that|strike\s+that|on\s+second\s+thought|correction|never\s*mind"
    r"|i\s+take\s+(?:that|it|this)\s+back|(?:ignore|disregard)\s+(?:that|this|the\s+above|what\s+i\s+(?:said|wrote))"
    r"|let\s+me\s+(?:correct|redo|recompute|recalculate|fix))\b|((?:this|that|it|which"
    r"|the\s+(?:answer|result))(?:'s|\s+is|\s+was)?\s+(?:not\s+(?:right|correct|possible|it)|wrong|incorrect"
    r"|impossible|a\s+mistake)|i\s+(?:made\s+(?:a|an)\s+(?:\w+\s+)?(?:mistake|error)|miscounted|miscalculated"
    r"|was\s+wrong)))", re.IGNORECASE)


# what a second thought says before its new value: 'Wait, no, 14', 'Actually, hmm, 14'
_SECOND_THOUGHT_RE = re.compile(r"(?:[\s:,.;!]|\b(?:no|nope|wait|actually|hmm+|oh|sorry)\b)*", re.IGNORECASE)


def _committed(text, found, single):
    """(found, why, detail): the answer the text commits to, revised by what comes after it, and why
    it is no commitment (a key of _FEEDBACK, and the words that say so) or None. single: the gold
    is one value."""
    revised = _revised(text, found)
    if revised is None:
        return found, "retracted", _show(text[found.end:], 40).strip(" .,")
    found = revised
    loop = _looped(text, found)
    if loop:
        return found, "cut off", loop
    before, value, after = _context(text, found)
    negations = [m for m in _NEGATED_BEFORE_RE.finditer(before) if not re.search(r"\d", before[m.end():])]
    negated = negations[-1] if negations else _NEGATED_AFTER_RE.search(after)  # 'not 10, it is 12': 12
    if negated:
        return found, "negated", negated.group().strip()
    if not single:
        return found, None, None
    hedge = _hedged(text, found)
    if hedge:
        return found, "hedged", hedge
    if re.search(r"[<>\u2264\u2265]|\\(?:le|ge|leq|geq|lt|gt|ne|neq)(?![A-Za-z])", value):  # 'x > 13'
        return found, "bound", value
    for why, before_re, after_re in (("bound", _BOUND_BEFORE_RE, _BOUND_AFTER_RE),
                                     ("operation words", _OPERATION_BEFORE_RE, _OPERATION_AFTER_RE)):
        m = before_re.search(before[-60:])  # the words right before the value
        if m and m.group().lstrip().startswith("between"):  # 'between 12 and 14': two candidates
            return found, "hedged", " and ".join(_NUMBER_RE.findall(m.group() + " " + value)[:2])
        if m:
            return found, why, m.group().strip() + " " + value
        m = after_re.search(after)
        if m:
            return found, why, value + " " + m.group().strip()
    return found, None, None


def _revised(text, found):
    """found, or the value a later sentence replaces it with ('The answer is 13. Wait, actually it is
    15.': 15); None when a later sentence takes it back and no other value follows ('\\boxed{13}.
    That is wrong.')."""
    for _ in range(5):  # only the words right after the answer may take it back, not a later paragraph
        ends = [m.end() for m in re.finditer(r"(?:[.!?](?=\s|$)|\n)\s*", text[found.end:found.end + MAX_ANSWER_CHARS])]
        m = _REVISION_RE.search(text, found.end, found.end + (ends[1] if len(ends) > 1 else MAX_ANSWER_CHARS))
        if not m or re.search(r"\d", text[found.end:m.start()]):  # it judges what comes between
            return found
        rest = m.end() + len(_SECOND_THOUGHT_RE.match(text, m.end()).group())  # 'Correction: 16.', 'wait, no, 16'
        later = _find_answer(text[rest:])
        judged = m.group(1) or m.group(3)  # 'that is wrong' needs another value; 'wait' may restate it
        if later is None or not re.search(r"[\d\\]", later.answer) or (
                judged and _same_number(later.answer.split("=")[-1], found.answer.split("=")[-1])):
            return None
        found = Found(later.answer, later.start + rest, later.end + rest)
    return found


def _looped(text, found):
    """The value a repetition loop stated before it stopped on another ('The answer is 12. The
    answer is 12. The answer is 1', '13\\n13\\n13\\n1'), or None: the text ends on the answer, and two
    sentences before it said the same words with one other value and nothing else."""
    lead = re.split(r"[.!?]\s|\n", text[max(0, found.start - 60):found.start])[-1].lstrip()  # its sentence's words
    if text[found.end:].strip() or text.count(lead, max(0, found.start - 10 * MAX_ANSWER_CHARS), found.start) < 3:
        return None
    sentence = re.compile(r"(?:^|(?<=\n)|(?<=[.!?]\s))\s*%s(-?\d(?:[\d,.]{0,30}\d)?)(?=[.!?]?(?:\s|$))"
                          % re.escape(lead))
    stated = [m.group(1) for m in sentence.finditer(text, max(0, found.start - 10 * MAX_ANSWER_CHARS), found.start)]
    value = _NUMBER_RE.search(found.answer)
    return stated[0] if len(stated) >= 2 and len(set(stated)) == 1 and value and value.group() != stated[0] else None


def _context(text, found):
    """(before, value, after): the answer from its first digit to its last, and the words of its
    clause before and after that, markup blanked and in lower case ('The answer is not
    $\\boxed{13}$.' -> 'the answer is not ', '13', '')."""
    region = _blanked(text[found.start:found.end])  # '\\boxed{13 \\text{ or more}}': its words are read too
    first = _LEADING_WORDS_RE.match(region).end()  # 'at least 13' read as an answer: 'at least' is before it
    last = max(first, _TRAILING_WORDS_RE.search(region, first).start())
    start, stop = found.start + first, found.start + last
    before = text[max(0, start - 200):start]
    cut = _LAST_CLAUSE_END_RE.match(before)  # the last clause end: '.*' takes all, then gives back
    after = text[stop:stop + 200]
    end = _CLAUSE_END_RE.search(after)
    if end and after[end.start()] == "," and not after[:end.start()].strip():  # '13, at the very least'
        more = _CLAUSE_END_RE.search(after, end.end())
        tail = after[end.end():more.start() if more else None]
        if not re.search(r"\d", tail) and _BOUND_AFTER_RE.match(tail.lower()):  # a bound with no value of its own
            after, end = tail, None
    before, after = before[cut.end():] if cut else before, after[:end.start()] if end else after
    return _blanked(before).lower(), text[start:stop], _blanked(after).lower()


def _blanked(s):
    """s with its markup blanked out (same length): '\\boxed{13}' -> '       13 '."""
    return _MARKUP_RE.sub(lambda m: " " * len(m.group()), s) if re.search(r"[\\$*{}`]", s) else s


def _hedged(text, found):
    """'12 or 13' when the answer is one of the numbers the text offers as alternatives ('It is 12 or
    13.', '\\boxed{13}. Or \\boxed{14}.', 'the possible answers are 12, 13 and 14'), else None. Two
    ways of writing one value ('1/2, or 0.5') are no hedge."""
    lo = max(text.rfind("\n", 0, max(0, found.start - 1)) + 1, found.start - 120)
    hi = text.find("\n", found.end)
    hi = min(hi if hi >= 0 else len(text), found.end + 120)
    if not _HEDGE_WORD_RE.search(text, lo, hi):
        return None  # the cheap look: no 'or', 'maybe', 'answers', ...
    window = re.sub(r"\\(?:boxed|fbox|text\w*)\s*\{|[$*]", lambda m: " " * len(m.group()), text[lo:hi])
    numbers = list(_HEDGE_NUMBER_RE.finditer(window))
    off = max(0, lo - 20)
    boxes = [(s + off - lo, e + off - lo) for s, e, _ in _boxes(text[off:hi])]
    for a, b in zip(numbers, numbers[1:]):
        if a.start() >= found.end - lo or b.end() <= found.start - lo:
            continue  # neither is the answer
        listed = (_LIST_GAP_RE.fullmatch(window, a.end(), b.start())  # a list where the text speaks of candidates
                  and _CANDIDATES_RE.search(window.lower(), 0, a.start()))
        ranged = (_RANGE_GAP_RE.fullmatch(window, a.end(), b.start())
                  and not _NO_RANGE_BEFORE_RE.search(window, 0, a.start()))
        if not (_HEDGE_GAP_RE.fullmatch(window, a.end(), b.start()) or listed or ranged):
            continue
        if _same_number(a.group(), b.group()) or (
                any(s <= b.start() < e for s, e in boxes) and not any(s <= a.start() < e for s, e in boxes)):
            continue  # one value said twice; '2520, or \\boxed{520}': the box marks the value kept
        return "%s and %s" % (a.group(), b.group())
    return None


def _same_number(a, b):
    """Whether two answers are one number ('1/2' and '0.5'), or, when not numbers, one cleaned string."""
    x, y = _plain_number(_clean(a)), _plain_number(_clean(b))
    return x[0] == y[0] if x and y else _clean(a) == _clean(b)


# ----------------------------------------------------------------------------- cleaning

_TEXT_CMD_RE = re.compile(
    r"\\(?:text|textbf|textit|textrm|textnormal|mathrm|mathbf|mathit|mbox|operatorname)\s*\{([^{}]*)\}")
# a plain number and the words after it, which _unit_name may read as a unit ('5 cm', '3 sq ft')
# ... also as the last side of a worked chain ('9 + 4 = 13 units')
_TRAILING_UNIT_RE = re.compile(
    r"(?:^|(?<==))\s*([-+]?[\d.,]*\d(?:/\d+)?)(\s*)([A-Za-z][A-Za-z/ .]*(?:\^\{?[23]\}?)?)$")
_PERCENT_RE = re.compile(r"%|\bpct\b|\bper ?cent(?:age)?\b")
_SPACE_RE = re.compile(r"(?<!\\)\\[,;:! ]|\\quad|\\qquad|~|[\u2009\u202f\u00a0\u3000]")
_DROP_RE = re.compile(
    r"\\left(?![a-z])|\\right(?![a-z])|\\[bB]ig[lr]?(?![a-z])|\\displaystyle|\\limits|"
    r"\^\s*\{\s*\\circ\s*\}|\^\s*\\circ|\\circ|°|\\degree|\\%|%|\\\$|\$")
_MATH_DELIMS_RE = re.compile(r"^\\\(|\\\)$|^\\\[|\\\]$")
# 'and'/'or' between answers, also unspaced: '(11,7)or(7,11)', '1orW(x)=-1', 'x=1orx=2' (a
# one-letter name and '=' follow); not 'for', 'orange', '1 order'
_AND_OR_RE = re.compile(r"\s+(?:and|or)\s+|(?<=[\d)\]}])\s*(?:and|or)(?=[^a-z]|[a-z]\s*=|$)")
_TRIG_RE = re.compile(r"\\(?:%s)(?![a-z])" % "|".join(sorted(_TRIG_FUNCS)))
_DEGREE_RE = re.compile(r"(\d+(?:\.\d+)?)\s*(?:\^\s*\{\s*\\circ\s*\}|\^\s*\\circ|°)")
_NAME = r"[A-Za-z](?:_\{?\w+\}?)?"
# 'x \in', 'y(x) =', '(x, y) =': a name in front of the answer (one '=' only); f(x) = .. is kept
# whole, for the reader's function letters (_FUNCTIONS), so f(x) = x^2 and f(y) = y^2 agree
_PREFIX_RE = re.compile(r"^\s*(?:[A-Za-z]\s*\\in(?![a-z])"
                        r"|(?![%s]\s*\()[A-Za-z]\s*\(\s*[A-Za-z]\s*\)\s*=(?!.*=)"
                        r"|\(\s*%s(?:\s*,\s*%s)+\s*\)\s*=(?!.*=))\s*"
                        % ("".join(sorted(_FUNC_LETTERS)), _NAME, _NAME))
_UNICODE = {"−": "-", "–": "-", "×": r"\times ", "·": r"\cdot ", "÷": r"\div ", "π": r"\pi ",
            "√": r"\sqrt ", "∞": r"\infty ", "≤": r"\le ", "≥": r"\ge ", "≠": r"\ne ",
            "±": r"\pm ", "∪": r"\cup ", "∓": r"\mp ", "≈": r"\approx ", "²": "^2", "³": "^3"}
_FULL_WIDTH = {c: c - 0xFEE0 for c in range(0xFF01, 0xFF5F)}  # '１２' is 12
_END = r"(?![A-Za-z])"  # end of a TeX command name (\b fails in '\tfrac34')
# (text that must occur, pattern, replacement): the check skips most patterns on most answers
_ALIASES = [(needle, re.compile(p.replace("END", _END)), r) for needle, p, r in [
    ("frac", r"\\[dtc]fracEND", r"\\frac"), ("binom", r"\\[dt]binomEND", r"\\binom"),
    ("\\le", r"\\leq?slantEND|\\leqEND", r"\\le"), ("\\ge", r"\\geq?slantEND|\\geqEND", r"\\ge"),
    ("\\neq", r"\\neqEND", r"\\ne"), ("brace", r"\\lbraceEND", r"\\{"), ("brace", r"\\rbraceEND", r"\\}"),
    ("\\lt", r"\\ltEND", "<"), ("\\gt", r"\\gtEND", ">"), (",", r"\s*\{\s*,\s*\}\s*", ","),
    ("infin", r"\\infinEND", r"\\infty"), ("dots", r"\\(?:l|c)?dotsEND", r"\\ldots"),
    ("{e}", r"\\(?:mathrm|mathit)\{e\}", "e"), ("R", r"\\mathbb\s*\{?R\}?|\\RealsEND", r"(-\\infty,\\infty)"),
    ("\\", r"\\(?:emptyset|varnothing)END", r"\\{\\}"), ("colon", r"\\colonEND", ":"),
    ("not", r"\\not\s*=", r"\\ne "),
    # \overline{AB}, \angle ABC, \triangle ABC: the name of a segment, angle or figure
    ("\\", r"\\(?:overline|bar|vec|hat|widehat|overrightarrow|mathcal)\s*\{([^{}]*)\}", r"\1"),
    ("\\", r"\\(?:angle|measuredangle|triangle)END\s*", ""),
]]
_THOUSANDS_RE = re.compile(r"(?<![\d.,])[1-9]\d{0,2}(?:,\d{3})+(?![\d,])(?:\.\d+)?")
_SPACED_INT_RE = re.compile(r"-?\d{1,3}(?: \d{3})+")
_INFINITY_RE = re.compile(r"(?<![A-Za-z\\])(?:(?i:infinity|inf)|oo)(?![A-Za-z])")
_BASE_RE = re.compile(r"\{?(\d+)\}?_\{\s*(\w+)\s*\}")  # 31_{4}, {31}_{4}: 31_4, a numeral in base 4


def _unwrap_text(s):
    """(s, unit) with each \\text{...} unwrapped: a trailing one after a value is a unit (dropped; unit
    is its name when it names a unit of measure), otherwise its words are kept."""
    unit = None
    for _ in range(20):
        m = _TEXT_CMD_RE.search(s)
        if not m:
            break
        inner = m.group(1).strip()
        is_unit = (not s[m.end():].strip(" .") and m.start() > 0
                   and re.fullmatch(r"[A-Za-z ./^\d]*", inner))
        if inner in ("and", "or"):
            s = s[:m.start()] + "," + s[m.end():]
        elif is_unit and not re.search(r"[=,]\s*$", s[:m.start()]):
            s, unit = s[:m.start()], _unit_name(inner) or None
        else:
            s = s[:m.start()] + inner + s[m.end():]
    return s, unit


# an operation still to do: numbers joined by + - * (x, \\times, \\cdot), no '=' ('18 - 3', '(9+1)')
_OPERATION_RE = re.compile(r"[-+]?\(?\s*\d+(?:\.\d+)?(?:\s*(?:[-+*x]|\\times|\\cdot)\s*\(?\s*[-+]?\d+(?:\.\d+)?\s*\)?)+"
                           r"\s*\)?")


def _without_approx(s):
    """'x \\approx 11' -> 'x = 11'; '1/3 \\approx 0.33' -> '1/3' (the exact value, before it); an
    operation still to do before it is a worked chain: '19 - 8 \\approx 11' -> '19 - 8 = 11'."""
    head, _, tail = s.partition("\\approx")
    if re.fullmatch(r"\s*%s\s*" % _NAME, head) or _OPERATION_RE.fullmatch(head.strip()):
        return head + "=" + tail.split("\\approx")[0]
    return head if head.strip() else tail


def _clean(answer):
    """LaTeX-noise-free form of a bare answer; the string the comparisons read."""
    return _clean_unit(answer)[0]


@functools.lru_cache(maxsize=1024)  # the same gold is read for every rollout of a problem
def _clean_unit(answer):
    """(_clean(answer), the name of the unit it ended in or None): '15\\text{ cm}^2' -> ('15', 'cm^2')."""
    s, unit = answer.strip(), None
    s = _prepared(s)
    for _ in range(5):  # nested \boxed{\boxed{..}} and boxes inside a gold solution
        if "\\boxed" not in s and "\\fbox" not in s:
            break
        boxed = _final_boxes(s)
        if boxed is None:  # '\boxed{W(n) = 1' never closed: what follows the opener
            s = re.sub(r"^\\(?:boxed|fbox)\s*\{", "", s)
            break
        s = boxed[0]
    if not s.isascii():
        s = s.translate(_FULL_WIDTH)
        for a, b in _UNICODE.items():
            s = s.replace(a, b)
        s = _SPACE_RE.sub(" ", s)  # thin and no-break spaces
    if s.endswith(".") and not s.endswith("..."):
        s = s[:-1]
    if s.startswith("*") or s.endswith("*"):  # '**13**': markdown bold
        s = s.strip("*").strip()
    if "$" in s:
        s = re.sub(r"(?<!\\)\$", "", s).strip()
    if "\\" in s or "{" in s:  # LaTeX: most plain answers skip all of this
        if s.startswith(("\\(", "\\[")):
            s = _MATH_DELIMS_RE.sub("", s).strip()
        if "\\overline" in s or "\\bar" in s or "\\dot" in s:  # 0.1\overline{6}: a repeating decimal, 1/6
            s = _REPEATING_RE.sub(_repeating, _DOTS_RE.sub(r"\\overline{\1\2\3}", s))
        if _TRIG_RE.search(s):  # \cos 60^\circ: inside a trig function a degree is pi/180
            s = _DEGREE_RE.sub(r"(\1\\pi/180)", s)
        if "\\!" in s:
            s = re.sub(r",\s*\\!\s*", ",", s)  # MATH's thousands separator: 12,\!345
        s = _SPACE_RE.sub(" ", s)
        for needle, pat, rep in _ALIASES:
            if needle in s:
                s = pat.sub(rep, s)
        if "\\text" in s or "\\m" in s or "\\operatorname" in s:
            s, unit = _unwrap_text(s)
        if "_{" in s:
            s = _BASE_RE.sub(r"\1_\2", s)
        if "\\approx" in s:
            s = _without_approx(s)
    s = _DROP_RE.sub("", s)
    if re.search(r"[A-Za-z]{3}", s):  # in words: 'negative five' is -5, '20 plus 16' is 20 + 16
        s = _WORD_OPS_RE.sub(lambda m: " %s " % _WORD_OPS[m.group(1).lower()] if m.group(1) else "-", _spelled(s))
    if "!=" in s:
        s = re.sub(r"(?<![\d)!])\s*!=", r"\\ne ", s)
    if "inf" in s or "oo" in s or "Inf" in s or "INF" in s:
        s = _INFINITY_RE.sub(r"\\infty", s)
    if "real numbers" in s.lower():  # 'all real numbers' is the interval (-oo, oo)
        s = re.sub(r"(?i)^(?:the set of |all |any )?real numbers$", r"(-\\infty,\\infty)", s.strip())
    if "=" in s or "\\in" in s:
        s = _PREFIX_RE.sub("", re.sub(r"^\s*=(?!=)", "", s))  # '= 81': the value 81
    s = s.strip()
    if s.startswith("{") and s.endswith("}") and _balanced(s[1:-1]):  # '{1, 3}': a TeX group
        s = s[1:-1].strip()
    trailing = _TRAILING_UNIT_RE.search(s)  # '5 cm' -> '5' (only after a plain number)
    if trailing:
        number, space, text = trailing.groups()
        name = _unit_name(text)
        word = re.match(r"[A-Za-z]+", text).group()
        glued = not space and (word in _SPACED_UNITS  # 2m: 2 times m
                               or name == "" and word not in _UNIT_NAMES and word[:-1] not in _UNIT_NAMES)
        if name is not None and not glued:
            s, unit = s[:trailing.end(1)].strip(), unit or name or None
    if "and" in s or "or" in s:
        s = _AND_OR_RE.sub(",", s)
    if _SPACED_INT_RE.fullmatch(s):
        s = s.replace(" ", "")
    if "," in s and not s.startswith(("(", "[", "\\{", "\\langle")):  # (1,100) is a pair
        s = _THOUSANDS_RE.sub(lambda m: m.group().replace(",", ""), s)
    if "=" in s:
        s = _last_side_of_arithmetic(s)
    return s.strip().rstrip(".").strip(), unit


_REPEATING_RE = re.compile(r"(?<![\d.])(-?)(\d{0,40})\.(\d{0,40})\\(?:overline|bar)\s*(?:\{\s*(\d{1,40})\s*\}|(\d))")
# an operation or a sign in words, between numbers or before one
_WORD_OPS = {"plus": "+", "minus": "-", "times": "*", "multiplied by": "*", "divided by": "\\div"}
_WORD_OPS_RE = re.compile(r"(?<=[\d)])\s*\b(plus|minus|times|multiplied by|divided by)\s+(?=[-\d(])"
                          r"|(?<![\w)])(?:minus|negative)\s+(?=[\d.(\\])", re.IGNORECASE)


# the repeating part between two dots, or under one: '0.\\dot{1}4285\\dot{7}' is 0.\\overline{142857}
_DOTS_RE = re.compile(r"\\dot\s*\{?(\d)\}?(?:(\d{0,38})\\dot\s*\{?(\d)\}?)?")


def _repeating(m):
    """'0.1\\overline{6}' -> '1/6': the exact value of a repeating decimal."""
    sign, whole, fixed, cycle = m.group(1), m.group(2) or "0", m.group(3), m.group(4) or m.group(5)
    value = int(whole) + Fraction(int(fixed + cycle) - int(fixed or "0"), 10 ** len(fixed) * (10 ** len(cycle) - 1))
    return "%s%d/%d" % (sign, value.numerator, value.denominator) if value.denominator > 1 else sign + str(value)


_ARITHMETIC_RE = re.compile(
    r"(?:[\d\s.+\-*/()\[\]{}^!]|\\(?:times|cdot|div|frac|sqrt|binom|choose)(?![A-Za-z]))+")


def _last_side_of_arithmetic(s):
    """'12 + 13 = 25' -> '25': a worked sum commits to its last side. Only when every side is
    plain arithmetic (digits and operators), or when a chain substitutes values before its
    plain last side: '7 * k = 7 * 0 = 0' -> '0' (a side between the first and the last is
    plain arithmetic). 'x = 5' and '7 = 11a + c' stay equations, and so does a false chain
    ('963 * 0 = 96', '822 = 0'): it states no value (_false_chain)."""
    sides = _chain_sides(s)
    if sides is None:
        return s
    plain = [bool(re.search(r"\d", x)) and _ARITHMETIC_RE.fullmatch(x) is not None for x in sides]
    if all(plain) or (len(sides) >= 3 and plain[-1] and any(plain[1:-1]) and all(x.strip() for x in sides)):
        return s if _false_chain(s) else sides[-1].strip()
    return s


def _chain_sides(s):
    """The sides of 'a = b = c' (an x between numbers read as a times: '731 x 0 = 0'), or None when
    s is no chain of '=' (a relation: '!=' is already '\\ne' here; a '!' is a factorial)."""
    if "=" not in s or _RELATION_SIGN_RE.search(s):
        return None
    return _TIMES_X_RE.sub("*", s).split("=")


def _false_chain(s):
    """Whether the chain s starts with integer arithmetic (_arithmetic_value) and ends on another
    value ('963 * 0 = 96', '10 + 5 = 6', '822 = 0'), unless it is a run-on chain whose each step
    goes on from the value before it ('9 + 4 = 13 - 2 = 11': 13, then 13 - 2 = 11). A chain that
    starts with a name is judged by its last side, as before: a slip in between is not held against
    it ('z = 3+3 = 2')."""
    sides = _chain_sides(s) or []
    values = [_arithmetic_value(x) for x in sides]
    if not values or values[0] is None or values[-1] is None or values[0] == values[-1]:
        return False
    carried = values[0]
    for side, value in zip(sides[1:], values[1:]):
        start = re.match(r"\s*(\d+)\s*(?:[-+*/]|\\(?:times|cdot|div)(?![A-Za-z]))", side)
        if value is None or value != carried and not (start and int(start.group(1)) == carried):
            return True
        carried = value
    return values[-2] != values[-1]  # the last step states its value: '13 - 2 = 11', not '= 13 - 2'


_INTEGER_ARITHMETIC_RE = re.compile(r"\s*(?:(\d+)|(\\times|\\cdot|\\div|[-+*/()]))")


def _arithmetic_value(s):
    """The exact value of integer arithmetic ('12 + 13', '480 * 0', '(3 - 5) * 2', '48 / 2') as a
    Fraction, or None for anything else (a decimal, a power, a TeX fraction, a letter): it only
    checks sides of a worked chain against each other, never reads an answer."""
    tokens, pos, end = [], 0, len(s.rstrip())
    while pos < end:
        m = _INTEGER_ARITHMETIC_RE.match(s, pos)
        if not m:
            return None
        tokens.append(Fraction(int(m.group(1))) if m.group(1) else
                      {"\\times": "*", "\\cdot": "*", "\\div": "/"}.get(m.group(2), m.group(2)))
        pos = m.end()
    tokens.append(None)  # the end
    at = [0]

    def take():
        at[0] += 1
        return tokens[at[0] - 1]

    def expr(depth):
        value = term(depth)
        while tokens[at[0]] in ("+", "-"):
            value = value + term(depth) if take() == "+" else value - term(depth)
        return value

    def term(depth):
        value = factor(depth)
        while tokens[at[0]] in ("*", "/"):
            op, rhs = take(), factor(depth)
            value = value * rhs if op == "*" else value / rhs  # ZeroDivisionError: None below
        return value

    def factor(depth):
        tok = take()
        if tok in ("-", "+"):
            value = factor(depth)
            return -value if tok == "-" else value
        if tok == "(" and depth < MAX_DEPTH:
            value = expr(depth + 1)
            if take() != ")":
                raise ValueError
            return value
        if isinstance(tok, Fraction):
            return tok
        raise ValueError

    try:
        value = expr(0)
        return value if tokens[at[0]] is None else None
    except (ValueError, ZeroDivisionError, RecursionError, IndexError):
        return None


_TIMES_X_RE = re.compile(r"(?<=\d)\s*x\s*(?=\d)|(?<=[A-Za-z)])\s+x\s+(?=\d)")  # '2 x 3', 'k x 0'
_RELATION_SIGN_RE = re.compile(r"[<>:]|\\(?:le|ge|ne|leq|geq|neq|approx|equiv)(?![A-Za-z])")

# ----------------------------------------------------------------------------- plain numbers

_PLAIN_RE = re.compile(r"[+-]?\d+(?:\.\d+)?", re.ASCII)
_NUM = r"[+-]?(?:\d+\.?\d*|\.\d+)"
_DECIMAL_RE = re.compile(r"(%s)(?:\s*(?:e|E|\\times\s*10\^|\*\s*10\^|\\cdot\s*10\^)\s*\{?\s*([+-]?\d{1,3})\s*\}?)?" % _NUM)
_FRAC_RE = re.compile(r"([+-]?)\s*\\frac\s*(?:\{\s*([+-]?\d+)\s*\}|(\d))\s*(?:\{\s*(\d+)\s*\}|(\d))")
_SLASH_RE = re.compile(r"([+-]?\d+)\s*/\s*(\d+)")
_MIXED_RE = re.compile(r"([+-]?\d+)\s*(?:\\frac\s*(?:\{\s*(\d+)\s*\}|(\d))\s*(?:\{\s*(\d+)\s*\}|(\d))"
                       r"|\s(\d+)\s*/\s*(\d+))")
_VAR_PREFIX_RE = re.compile(r"([A-Za-z])\s*=\s*(?!=)")


def _plain_number(s):
    """(Fraction, is_decimal) for a cleaned plain number (also 'x = 3'), else None."""
    if len(s) > 400:  # longer digit strings are not 'plain' (and int() caps at 4300 digits)
        return None
    m = _DECIMAL_RE.fullmatch(s)
    if m:
        value = Fraction(m.group(1))
        if m.group(2):
            value *= Fraction(10) ** int(m.group(2))
        return value, "." in m.group(1)
    m = _FRAC_RE.fullmatch(s)
    if m:
        den = int(m.group(4) or m.group(5))
        if den == 0:
            return None
        value = Fraction(int(m.group(2) or m.group(3)), den)
        return (-value if m.group(1) == "-" else value), False
    m = _SLASH_RE.fullmatch(s)
    if m:
        return (Fraction(int(m.group(1)), int(m.group(2))), False) if int(m.group(2)) else None
    m = _MIXED_RE.fullmatch(s)
    if m:  # 2\frac{1}{2} and '2 1/2' are mixed numbers (2.5), as in textbook answers
        whole = int(m.group(1))
        num = int(m.group(2) or m.group(3) or m.group(6))
        den = int(m.group(4) or m.group(5) or m.group(7))
        if den == 0 or num >= den:
            return None
        part = Fraction(num, den)
        return (whole - part if m.group(1).startswith("-") else whole + part), False
    return None


def _sig6_close(a, b):
    """True when a and b (Fractions) agree to about 6 significant digits."""
    mag = max(abs(a), abs(b))
    if mag == 0:
        return True
    exp10 = math.floor(math.log10(mag.numerator) - math.log10(mag.denominator))
    return abs(a - b) <= Fraction(1, 2) * Fraction(10) ** (exp10 - 5)


def _compare_fractions(p, g):
    """(equal, reason) for two plain numbers given as (Fraction, is_decimal)."""
    (a, a_dec), (b, b_dec) = p, g
    if a == b:
        return True, "equal"
    if (a_dec or b_dec) and b.denominator > 1 and _sig6_close(a, b):  # a whole number needs itself
        return True, "equal"
    if a_dec and not b_dec and abs(a - b) <= abs(b) / 100:
        return False, "approximation"
    return False, "wrong value"


def normalize(answer):
    """Canonical string form of a bare answer: '\\dfrac{1}{2}' -> '1/2', '1,000' -> '1000'."""
    if not isinstance(answer, str):
        raise TypeError("normalize() needs a str answer, got %s" % type(answer).__name__)
    s = _clean(answer[:MAX_ANSWER_CHARS * 10])
    var = _VAR_PREFIX_RE.match(s)
    num = _plain_number(s[var.end():] if var else s)
    if num is None:  # drop spaces, except those that keep '\pi r' from becoming '\pir'
        return re.sub(r"\s+", " ", re.sub(r"(?<![A-Za-z0-9])\s+|\s+(?![A-Za-z0-9])", "", s))
    value, is_decimal = num
    if value.denominator == 1:
        text = str(value.numerator)
    elif is_decimal:  # a decimal stays a decimal, without trailing zeros
        places = 0
        while (value * 10 ** places).denominator != 1:
            places += 1
        digits = str(abs(value.numerator * 10 ** places // value.denominator)).rjust(places + 1, "0")
        text = ("-" if value < 0 else "") + digits[:-places] + "." + digits[-places:]
    else:
        text = "%d/%d" % (value.numerator, value.denominator)
    return (s[:var.end()].replace(" ", "") + text) if var else text

# ----------------------------------------------------------------------------- the LaTeX reader
# Everything below up to the worker runs inside the worker process: it imports sympy lazily.


class TooLarge(ValueError):
    """The answer is too long, too deep or too big to check exactly."""


class Unreadable(ValueError):
    """The answer is not math this reader understands."""


_TOKEN_RE = re.compile(r"""
    (?P<num>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+(?![A-Za-z]))?)
  | (?P<env>\\(?:begin|end)\{(?:[pbBvV]?matrix|smallmatrix|array)\}(?:(?<=\{array\})\{[lcr|]*\})?)
  | (?P<cell>&|\\\\)
  | (?P<cmd>\\[A-Za-z]+|\\[{}|])
  | (?P<word>[A-Za-z]+)
  | (?P<op>[-+*/^_()\[\]{}=<>!|,])
  | (?P<space>\s+)
""", re.VERBOSE)


def _tokenize(s):
    """List of (kind, text) tokens; anything outside the whitelist is Unreadable."""
    tokens, pos = [], 0
    while pos < len(s):
        m = _TOKEN_RE.match(s, pos)
        if not m:
            raise Unreadable("unexpected character %r" % s[pos])
        pos = m.end()
        kind, text = m.lastgroup, m.group()
        if kind == "space":
            continue
        if kind == "num" and re.search(r"[eE][+-]?\d{4,}", text):
            raise TooLarge("exponent too large")
        if kind == "word":
            if text == "sqrt":
                tokens.append(("cmd", "sqrt"))
            elif text in _NAMED_FUNCS:
                tokens.append(("func", text))
            elif text in ("pi", "infty", "inf", "infinity", "oo"):
                tokens.append(("const", "\\pi" if text == "pi" else "\\infty"))
            else:
                tokens.extend(("var", ch) for ch in text)  # 'xy' is x*y
            continue
        if kind == "cmd":
            name = text[1:]
            if name in ("frac", "sqrt", "binom", "lfloor", "rfloor", "lceil", "rceil", "sum", "prod"):
                tokens.append(("cmd", name))
            elif name in _NAMED_FUNCS:
                tokens.append(("func", name))
            elif name in _GREEK:
                tokens.append(("var", name))
            elif name in ("pi", "infty"):
                tokens.append(("const", text))
            elif name in ("cdot", "times", "ast"):
                tokens.append(("op", "*"))
            elif name == "div":
                tokens.append(("op", "/"))
            elif name == "|":
                tokens.append(("op", "|"))
            elif name in ("{", "}"):
                tokens.append(("op", "(" if name == "{" else ")"))
            else:
                raise Unreadable("unknown command %s" % text)
            continue
        if text in "{}":  # TeX groups read like parentheses
            text = "(" if text == "{" else ")"
        tokens.append((kind, text))
    return tokens


class _Reader:
    """Recursive-descent reader: tokens -> sympy expression, with depth and size limits."""

    def __init__(self, text, sp):
        self.sp = sp  # the sympy module, passed in so this file imports it only in the worker
        self.toks = _tokenize(text)
        self.i = 0
        self.depth = 0
        self.in_abs = 0
        self.has_decimal = False

    def peek(self):
        return self.toks[self.i] if self.i < len(self.toks) else ("end", "")

    def take(self, text=None):
        tok = self.peek()
        if text is not None and tok[1] != text:
            raise Unreadable("expected %r, found %r" % (text, tok[1] or "end"))
        self.i += 1
        return tok

    def read(self):
        e = self.expr()
        if self.peek()[0] != "end":
            raise Unreadable("unexpected %r" % self.peek()[1])
        return e

    def expr(self):
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise TooLarge("nested too deeply")
        sign = 1
        while self.peek() in (("op", "+"), ("op", "-")):
            sign = -sign if self.take()[1] == "-" else sign
        value = sign * self.term()
        while self.peek()[0] == "op" and self.peek()[1] in ("+", "-"):
            op = self.take()[1]
            t = self.term()
            value = value + t if op == "+" else value - t
        self.depth -= 1
        return value

    def starts_atom(self):
        kind, text = self.peek()
        if kind == "env":
            return text.startswith("\\begin")
        if kind in ("num", "var", "func", "const", "cmd"):
            return text not in ("rfloor", "rceil")
        return kind == "op" and (text in "([" or (text == "|" and not self.in_abs))

    def term(self):
        value = self.unary()
        while True:
            kind, text = self.peek()
            if kind == "op" and text in ("*", "/"):
                self.take()
                rhs = self.unary()
                if text == "/":
                    if rhs == 0:
                        raise Unreadable("division by zero")
                    value = value / rhs
                else:
                    value = value * rhs
            elif self.starts_atom():  # implicit product: 2x, 2\sqrt{3}, (x+1)(x-1)
                value = value * self.power()
            else:
                return value

    def unary(self):
        if self.peek() == ("op", "-"):
            self.take()
            return -self.unary()
        if self.peek() == ("op", "+"):
            self.take()
            return self.unary()
        return self.power()

    def power(self):
        base = self.postfix()
        if self.peek() == ("op", "^"):
            self.take()
            self.depth += 1
            if self.depth > MAX_DEPTH:
                raise TooLarge("nested too deeply")
            exponent = self.unary() if self.peek()[1] == "-" else self.power()
            self.depth -= 1
            return self.safe_pow(base, exponent)
        return base

    def safe_pow(self, base, exponent):
        """base**exponent, refusing exact results with more than MAX_DIGITS digits."""
        sp = self.sp
        if exponent.is_Number and base.is_Number and base.is_Rational and exponent.is_Rational:
            size = max(abs(base.p), abs(base.q))
            if size > 1 and abs(exponent) * math.log10(size) > MAX_DIGITS:
                raise TooLarge("power too large")
        elif exponent.is_Number and abs(exponent) > 10 ** 6:
            raise TooLarge("exponent too large")
        elif not exponent.is_Number and base.is_Number and abs(base) not in (0, 1):
            bound = exponent.evalf(15) if not exponent.free_symbols else None
            if bound is not None and bound.is_real and abs(bound) > 10 ** 6:
                raise TooLarge("power too large")
        if (exponent.is_Rational and not exponent.is_Integer and exponent.q % 2 == 1
                and base.is_number and base.is_extended_negative):
            # (-8)^{1/3} = -2, as \sqrt[3]{-8}: odd roots of negative numbers take the real branch
            return (-1) ** exponent.p * sp.Pow(-base, exponent)
        return sp.Pow(base, exponent)

    def postfix(self):
        value = self.atom()
        while self.peek() == ("op", "!"):
            self.take()
            if value.is_Number:
                if not (value.is_Integer and 0 <= value <= MAX_FACTORIAL):
                    raise TooLarge("factorial too large")
            value = self.sp.factorial(value)
        return value

    def group(self):
        """A TeX argument: {expr}, or a single digit / letter / command (\\frac12)."""
        kind, text = self.peek()
        if kind == "op" and text == "(":
            return self.paren()
        if kind == "num" and len(text) > 1 and text[0].isdigit():
            self.toks[self.i] = ("num", text[1:])  # \frac12: the arguments are 1 and 2
            return self.number(text[0])
        return self.atom()

    def paren(self):
        opener = self.take()[1]
        value = self.expr()
        closer = self.take()[1]
        if closer not in (")", "]"):
            raise Unreadable("unbalanced %s" % opener)
        return value

    def number(self, text):
        # decimals become exact rationals; the flag lets 0.333333 still match 1/3
        self.has_decimal = self.has_decimal or "." in text
        value = Fraction(text)
        return self.sp.Rational(value.numerator, value.denominator)

    def atom(self):
        sp = self.sp
        kind, text = self.take()
        if kind == "num":
            return self.number(text)
        if kind == "var":
            name = text
            if self.peek() == ("op", "_"):  # x_1, a_{10}
                self.take()
                sub = self.take()
                if sub[1] == "(":
                    parts = []
                    while self.peek()[1] not in (")", ""):
                        parts.append(self.take()[1])
                    self.take(")")
                    sub = ("", "".join(parts))
                name = "%s_%s" % (name, sub[1])
                return sp.Symbol(name)
            if name == "e":
                return sp.E
            if name == "i":
                return sp.I
            if self.peek() == ("op", "(") and (name in _FUNC_LETTERS or self.number_in_parens()):
                return self.application(name)  # f(x), and a(3), k(0): a value of a function
            return sp.Symbol(name)
        if kind == "const":
            return sp.pi if text == "\\pi" else sp.oo
        if kind == "op" and text in "([":
            self.i -= 1
            return self.paren()
        if kind == "op" and text == "|":
            self.in_abs += 1
            value = self.expr()
            self.take("|")
            self.in_abs -= 1
            return sp.Abs(value)
        if kind == "cmd":
            return self.command(text)
        if kind == "env" and text.startswith("\\begin"):
            return self.matrix()
        if kind == "func":
            return self.function(text)
        raise Unreadable("unexpected %r" % (text or "end"))

    def matrix(self):
        """\\begin{pmatrix} 1 & 2 \\\\ 3 & 4 \\end{pmatrix} as a matrix, so sums and products of
        matrices are read too."""
        rows, row = [], []
        while True:
            if self.peek()[0] == "end":
                raise Unreadable("matrix never ends")
            if self.peek()[0] == "env":
                self.take()
                break
            if self.peek() == ("cell", "\\\\") and not row:  # an empty last row
                self.take()
                continue
            row.append(self.expr())
            sep = self.peek()
            if sep == ("cell", "&"):
                self.take()
            elif sep == ("cell", "\\\\"):
                self.take()
                rows.append(row)
                row = []
        if row:
            rows.append(row)
        if not rows or len({len(r) for r in rows}) != 1:
            raise Unreadable("ragged matrix")
        return self.sp.ImmutableMatrix(rows)

    def number_in_parens(self):
        """Whether the next tokens are '(3)' or '(-1)': after a letter, a function's argument."""
        toks = self.toks[self.i:self.i + 4]
        kinds = [t[1] if t[0] == "op" else t[0] for t in toks]
        return kinds[:3] == ["(", "num", ")"] or kinds[:4] == ["(", "-", "num", ")"]

    def application(self, name):
        """f(0), g(x, y): a named function applied, never f*0 (so 2f(0) is not 0)."""
        self.take("(")
        args = [self.expr()]
        while self.peek() == ("op", ","):
            self.take()
            args.append(self.expr())
        self.take(")")
        return self.sp.Function(name)(*args)

    def command(self, name):
        sp = self.sp
        if name == "frac":
            num, den = self.group(), self.group()
            if den == 0:
                raise Unreadable("division by zero")
            return num / den
        if name in ("sum", "prod"):  # \sum_{k=0}^{n} body, kept unevaluated: compared at points
            self.take("_")
            self.take("(")
            index = self.take()
            if index[0] != "var":
                raise Unreadable("\\%s needs an index variable" % name)
            self.take("=")
            low = self.expr()
            self.take(")")
            self.take("^")
            high = self.group()
            limits = (sp.Symbol(index[1]), low, high)
            body = self.term()
            return sp.Sum(body, limits) if name == "sum" else sp.Product(body, limits)
        if name == "binom":
            n, k = self.group(), self.group()
            if n.is_Number and abs(n) > MAX_FACTORIAL:
                raise TooLarge("binomial too large")
            return sp.binomial(n, k)
        if name == "sqrt":
            index = None
            if self.peek() == ("op", "["):
                self.take()
                index = self.expr()
                self.take("]")
            radicand = self.group()
            if index is None:
                return sp.sqrt(radicand)
            if index == 0:
                raise Unreadable("zeroth root")
            return self.safe_pow(radicand, 1 / index)  # \sqrt[3]{-8} = -2, as (-8)^{1/3}
        if name in ("lfloor", "lceil"):
            value = self.expr()
            self.take("rfloor" if name == "lfloor" else "rceil")
            return sp.floor(value) if name == "lfloor" else sp.ceiling(value)
        raise Unreadable("unexpected \\%s" % name)

    def function(self, name):
        sp = self.sp
        power, base = None, None
        if name == "log" and self.peek() == ("op", "_"):
            self.take()
            base = self.group()
        if self.peek() == ("op", "^"):  # \sin^2 x
            self.take()
            power = self.group()
        if self.peek()[0] == "op" and self.peek()[1] == "(":
            arg = self.paren()
        else:  # \sin 2x: the argument is the following product of numbers and letters
            arg = self.postfix()
            while self.peek()[0] in ("num", "var", "const"):
                arg = arg * self.postfix()
        sympy_name, use = _FUNCTIONS[name]
        if (use == "matrix") != isinstance(arg, sp.MatrixBase):
            raise Unreadable("\\%s of a %s" % (name, "number" if use == "matrix" else "matrix"))
        if use == "matrix" and not arg.is_square:
            raise Unreadable("\\%s of a matrix that is not square" % name)
        value = sp.log(arg, base) if base is not None else getattr(sp, sympy_name)(arg)
        return self.safe_pow(value, power) if power is not None else value

# ----------------------------------------------------------------------------- answer kinds
# What the reader makes of an answer. A new kind of answer takes three entries: its tuple here, a
# reading rule in _READERS and its rows in _RULES (the comparison table).
Expr = namedtuple("Expr", "value decimal")      # 3/4, 2\sqrt2 + x; decimal: written with a '.'
Eq = namedtuple("Eq", "lhs rhs named")          # x = 3; named: the left side names the answer
Rel = namedtuple("Rel", "op lhs rhs")           # x < 3, x \le 3, x \ne 3 (a '>' is turned round)
Seq = namedtuple("Seq", "opener closer items")  # (1, 2), [0, 1), \{1, 2\}: tuples, intervals, sets
List = namedtuple("List", "items")              # 1, 2: several answers, in any order
Assign = namedtuple("Assign", "pairs")          # x = 1, y = 2: [(name, Eq)], in name order
Union = namedtuple("Union", "items")            # (-\infty, 0) \cup (1, \infty)
Matrix = namedtuple("Matrix", "rows")           # rows of answers
Text = namedtuple("Text", "words")              # 'no solution', 'yes': lower case, single spaces

# ----------------------------------------------------------------------------- reading answers

_PAIRS = [("\\{", ("\\}",)), ("\\langle", ("\\rangle",)), ("(", (")", "]")), ("[", ("]", ")"))]
_MATRIX_RE = re.compile(r"\\begin\{([pbBvV]?matrix|array|smallmatrix)\}(?:(?<=\{array\})\{[^{}]*\})?(.*)"
                        r"\\end\{\1\}", re.S)
_FRAMED_RE = re.compile(r"[(\[]\s*(\\begin\{.*\})\s*[)\]]", re.S)  # \left[\begin{array}..\right]


def _split_top(s, seps):
    """Split s at separators that are outside every bracket."""
    parts, depth, start, i = [], 0, 0, 0
    while i < len(s):
        ch = s[i]
        if ch in "([{" or s.startswith("\\{", i) or s.startswith("\\langle", i):
            depth += 1
        elif ch in ")]}" or s.startswith("\\}", i) or s.startswith("\\rangle", i):
            depth -= 1
        if depth == 0:
            for sep in seps:
                if s.startswith(sep, i):
                    parts.append(s[start:i])
                    start = i + len(sep)
                    i = start - 1
                    break
        if s.startswith("\\{", i) or s.startswith("\\}", i):
            i += 1
        i += 1
        if depth > MAX_DEPTH:
            raise TooLarge("nested too deeply")
    parts.append(s[start:])
    return [p.strip() for p in parts]


def _outer_bracket(s):
    """(opener, closer, inner) when one bracket pair wraps all of s ('[1, 2)' too), else None."""
    for opener, closers in _PAIRS:
        if s.startswith(opener):
            for closer in closers:
                if s.endswith(closer) and len(s) >= len(opener) + len(closer):
                    inner = s[len(opener):len(s) - len(closer)]
                    if _balanced(inner):
                        return opener, closer, inner
            return None
    return None


def _balanced(s):
    depth = 0
    for m in re.finditer(r"\\[{}]|\\langle|\\rangle|[()\[\]{}]", s):
        depth += 1 if m.group() in ("(", "[", "{", "\\{", "\\langle") else -1
        if depth < 0:
            return False
    return depth == 0


def _read_answer(s, sp):
    """The answer kind (Expr, Eq, ...) of a cleaned answer: the first rule of _READERS that reads it."""
    if len(s) > MAX_ANSWER_CHARS:
        raise TooLarge("answer too long")
    if not s:
        raise Unreadable("empty answer")
    framed = _FRAMED_RE.fullmatch(s)
    if framed:
        s = framed.group(1)
    for rule in _READERS:
        answer = rule(s, sp)
        if answer is not None:
            return answer
    raise Unreadable("no reading rule applies")  # not reached: an expression is the last rule


def _read_matrix(s, sp):
    m = _MATRIX_RE.fullmatch(s)
    if not m or "\\begin" in m.group(2):  # a sum of matrices is an expression
        return None
    rows = [r for r in re.split(r"\\\\", m.group(2)) if r.strip()]
    return Matrix([[_read_answer(c.strip(), sp) for c in r.split("&")] for r in rows])


def _read_words(s, sp):
    return Text(" ".join(s.lower().split())) if _is_words(s) else None


def _read_union(s, sp):
    parts = _split_top(s, ["\\cup"])
    return Union([_read_answer(p, sp) for p in parts]) if len(parts) > 1 else None


def _read_solution_groups(s, sp):
    """'p=5,q=2; p=7,q=2': several solutions, each a group of assignments."""
    groups = _split_top(s, [";"])
    if len(groups) > 1 and all("," in g and "=" in g for g in groups):
        return List([_read_answer(g, sp) for g in groups])
    return None


def _read_bracketed(s, sp):
    """(1, 2), [0, 1), \\{1\\}, \\langle 1, 2 \\rangle (one value in parentheses is an expression)."""
    wrapped = _outer_bracket(s)
    if not wrapped:
        return None
    opener, closer, inner = wrapped
    items = _split_top(inner, [",", ";"])
    if len(items) > 1 or opener == "\\{":
        return Seq(opener, closer, _read_items([p for p in items if p or opener != "\\{"], sp))
    return None


def _read_comma_list(s, sp):
    """'1, 2' (a List), or 'x = 1, y = 2' (an Assign: each name given once)."""
    items = _split_top(s, [",", ";"])
    if len(items) < 2:
        return None
    read = _read_items([p for p in items if p], sp)
    names = [str(x.lhs) for x in read if isinstance(x, Eq) and x.lhs.is_Symbol and not x.rhs.has(x.lhs)]
    if len(names) == len(read) and len(set(names)) == len(names):
        return Assign(sorted(zip(names, read)))
    return List(read)


def _read_plus_minus(s, sp):
    """1 \\pm \\sqrt2 is the two values 1 + \\sqrt2 and 1 - \\sqrt2."""
    if s.count("\\pm") + s.count("\\mp") != 1:
        return None
    a, b = ("+", "-") if "\\pm" in s else ("-", "+")
    body = s.replace("\\pm", "\\PM").replace("\\mp", "\\PM")
    return List([_read_answer(body.replace("\\PM", a), sp), _read_answer(body.replace("\\PM", b), sp)])


def _read_relation_text(s, sp):
    sides = _split_rel(s)
    return _read_relation(*sides, sp) if sides else None


def _read_expression(s, sp):
    value, decimal = _read_expr(s, sp)
    if isinstance(value, sp.MatrixBase):  # a sum or product of matrices
        return Matrix([[Expr(value[i, j], decimal) for j in range(value.cols)]
                       for i in range(value.rows)])
    return Expr(value, decimal)


# The reading rules, tried in this order on a cleaned answer; each returns an answer or None.
# Outer structure first: 'x = 1, y = 2' is a list of equations, not an equation with a list in it.
_READERS = [_read_matrix, _read_words, _read_union, _read_solution_groups, _read_bracketed,
            _read_comma_list, _read_plus_minus, _read_relation_text, _read_expression]


def _read_items(texts, sp):
    """The items of a list or set, a '\\pm 2' among them counted as its two values."""
    out = []
    for text in texts:
        item = _read_answer(text, sp)
        if isinstance(item, List) and ("\\pm" in text or "\\mp" in text):
            out.extend(item.items)
        else:
            out.append(item)
    return out


def _interval(opener, closer, low, high):
    return Seq(opener, closer, [Expr(low, False), Expr(high, False)])


def _read_relation(ops, texts, sp):
    """'x = 3', 'x = y = 3', 'x < 3', 'x \\ne 3', and chains '-3 < x \\le 7' read as intervals."""
    values = [_read_expr(t, sp)[0] for t in texts]
    if all(op == "=" for op in ops):  # x = y = 3: keep the outer sides
        # a named left side ('x', 'AB', '|PQ|', 'f(x)', 'A:B', no number in it) names the answer
        named = not re.search(r"\d", re.sub(r"_\{[^{}]*\}|_\w", "", texts[0]))
        return Eq(values[0], values[-1], named)
    if len(ops) == 1:
        op, (l, r) = ops[0], values
        if op in (">", "\\ge"):
            op, l, r = ("<" if op == ">" else "\\le"), r, l
        return Rel(op, l, r)
    if len(ops) == 2 and ops[0] in ("<", "\\le") and ops[1] in ("<", "\\le"):
        lo, mid, hi = values
    elif len(ops) == 2 and ops[0] in (">", "\\ge") and ops[1] in (">", "\\ge"):
        hi, mid, lo = values
        ops = [{">": "<", "\\ge": "\\le"}[op] for op in reversed(ops)]
    else:
        raise Unreadable("chained relation")
    if not mid.free_symbols or lo.free_symbols or hi.free_symbols:
        raise Unreadable("chained relation")
    opener, closer = ("(" if ops[0] == "<" else "["), (")" if ops[1] == "<" else "]")
    if isinstance(mid, sp.Abs) and lo.is_nonnegative:  # 1 \le |z| \le 2: two intervals
        left = _interval("(" if closer == ")" else "[", ")" if opener == "(" else "]", -hi, -lo)
        return Union([left, _interval(opener, closer, lo, hi)])
    return _interval(opener, closer, lo, hi)


def _is_words(s):
    """'yes', 'no solution', 'Monday': words, not a product of single-letter variables."""
    if not re.fullmatch(r"[A-Za-z][A-Za-z ]+", s):
        return False
    runs = [w for w in re.findall(r"[A-Za-z]+", s) if w not in _NAMED_FUNCS and w not in _GREEK]
    return " " in s.strip() or any(len(w) >= 3 for w in runs)


def _split_rel(s):
    """([ops], [sides]) when s is a relation at top level, else None."""
    pieces, ops, depth, last = [], [], 0, 0
    for m in re.finditer(r"\\le|\\ge|\\ne|<=|>=|!=|<|>|=|[()\[\]{}]", s):
        tok = m.group()
        if tok in "([{":
            depth += 1
        elif tok in ")]}":
            depth -= 1
        elif depth == 0:
            pieces.append(s[last:m.start()])
            ops.append({"<=": "\\le", ">=": "\\ge", "!=": "\\ne"}.get(tok, tok))
            last = m.end()
    if not ops:
        return None
    pieces.append(s[last:])
    if any(not p.strip() for p in pieces):
        raise Unreadable("relation with an empty side")
    return ops, pieces


_MIXED_IN_EXPR_RE = re.compile(
    r"(?<![\w.}^_\\])(\d+)\s*\\frac\s*(?:\{\s*(\d+)\s*\}|(\d))\s*(?:\{\s*(\d+)\s*\}|(\d))(?![\w(\\{^])")


def _mixed(m):
    """'15\\frac{39}{40}' is the mixed number 15 + 39/40 (a proper fraction after an integer)."""
    whole, num, den = m.group(1), m.group(2) or m.group(3), m.group(4) or m.group(5)
    return "(%s+%s/%s)" % (whole, num, den) if 0 < int(num) < int(den) else m.group()


def _read_expr(s, sp):
    if "\\frac" in s:
        s = _MIXED_IN_EXPR_RE.sub(_mixed, s)
    ratio = _split_top(s, [":"]) if ":" in s else [s]
    if len(ratio) == 2 and all(ratio):  # 3:8 is the ratio 3/8 (12:00 is a time: 12/0 is unreadable)
        (a, a_dec), (b, b_dec) = _read_expr(ratio[0], sp), _read_expr(ratio[1], sp)
        if b == 0:
            raise Unreadable("ratio with a zero term")
        return a / b, a_dec or b_dec
    reader = _Reader(s, sp)
    return reader.read(), reader.has_decimal

# ----------------------------------------------------------------------------- comparing


def _sample_values(sp):
    # irregular positive numbers: two different expressions rarely agree at all of them;
    # 30-digit floats, so x^(10^6) at a point costs nothing (an exact rational would not)
    return [sp.Float(sp.Rational(n, 997), 30) for n in (733, 1289, 2143, 431, 1871, 3109, 953, 2609)]


def _value(e, sp):
    """e evaluated to 30 digits, or None when it is not a finite number."""
    v = e.evalf(30)
    if not v.is_number or v.has(sp.nan, sp.zoo, sp.oo, -sp.oo):
        return None
    return v


def _close(u, v, sp, rel):
    """|u - v| <= rel * max(|u|, |v|) for sympy numbers of any magnitude (complex allowed)."""
    diff = sp.Abs(u - v).evalf(30)
    mag = sp.Max(sp.Abs(u), sp.Abs(v)).evalf(30)
    if mag == 0:
        return True
    return bool(diff <= mag * rel)


def _as_fraction(v, sp):
    r = sp.Rational(v)
    return Fraction(int(r.p), int(r.q))


def _compare_expr(a, b, sp, a_dec=False, b_dec=False):
    """(equal, reason) for two sympy expressions."""
    if a == b:
        return True, "equal"
    if a.has(sp.oo, -sp.oo, sp.zoo) or b.has(sp.oo, -sp.oo, sp.zoo):
        return False, "wrong value"
    if a.is_Rational and b.is_Rational:
        pa = (Fraction(int(a.p), int(a.q)), a_dec)
        pb = (Fraction(int(b.p), int(b.q)), b_dec)
        return _compare_fractions(pa, pb)
    symbols = sorted(a.free_symbols | b.free_symbols, key=str)
    if not symbols:
        va, vb = _value(a, sp), _value(b, sp)
        if va is None or vb is None:
            return False, "wrong value"
        if _close(va, vb, sp, sp.Float("1e-25")):
            return True, "equal"  # equal to 25 digits: the same closed form, written differently
        if (a_dec or b_dec) and va.is_real and vb.is_real:
            if _sig6_close(_as_fraction(va, sp), _as_fraction(vb, sp)):
                return True, "equal"
            if a_dec and not b_dec and _close(va, vb, sp, sp.Float("0.01")):
                return False, "approximation"
        return False, "wrong value"
    if len(symbols) > 10:
        raise TooLarge("too many variables")
    values, agree, points = _sample_values(sp), 0, 4
    if a.has(sp.floor, sp.ceiling) or b.has(sp.floor, sp.ceiling):
        # floor(m/3) and floor(m/2) agree (at 0) for every m < 2: sample where they differ, more
        values, points = [v * 19 for v in values] + [v * 5 for v in values], 12
    for k in range(points):  # identity testing at random points, instead of an unbounded simplify
        point = {s: values[(3 * k + 5 * j) % len(values)] for j, s in enumerate(symbols)}
        va, vb = _value(a.xreplace(point), sp), _value(b.xreplace(point), sp)
        if va is None or vb is None:
            continue
        if not _close(va, vb, sp, sp.Float("1e-15")):
            return False, "wrong value"
        agree += 1
    if agree >= 2:
        return True, "equal"
    return (True, "equal") if sp.simplify(a - b) == 0 else (False, "wrong value")


def _compare_eq(a, b, sp, positive=False):
    """Two equations are equal when lhs-rhs of one is a constant multiple of the other's
    (a positive multiple for inequalities, whose direction a negative one would flip)."""
    da, db = a.lhs - a.rhs, b.lhs - b.rhs
    if a.lhs == b.lhs and a.lhs.is_Symbol and not positive:
        return _compare_expr(a.rhs, b.rhs, sp)
    undef = sp.core.function.AppliedUndef
    if (isinstance(a.lhs, undef) and isinstance(b.lhs, undef) and a.lhs.func == b.lhs.func
            and not positive and all(x.is_Symbol for x in a.lhs.args + b.lhs.args)
            and len(a.lhs.args) == len(b.lhs.args)):
        # W(n) = 1 against W(x) = 1: the same function; its variable's name does not matter
        fresh = [sp.Dummy() for _ in a.lhs.args]
        return _compare_expr(a.rhs.xreplace(dict(zip(a.lhs.args, fresh))),
                             b.rhs.xreplace(dict(zip(b.lhs.args, fresh))), sp)
    symbols = sorted(da.free_symbols | db.free_symbols, key=str)
    if not symbols:
        return (bool(da == 0) == bool(db == 0)), "wrong value"
    values, ratios = _sample_values(sp), []
    for k in range(4):
        point = {s: values[(3 * k + 5 * j) % len(values)] for j, s in enumerate(symbols)}
        va, vb = _value(da.xreplace(point), sp), _value(db.xreplace(point), sp)
        if va is None or vb is None or vb == 0:
            continue
        ratios.append(va / vb)
    if len(ratios) >= 2 and all(r != 0 and _close(r, ratios[0], sp, sp.Float("1e-15")) for r in ratios):
        if not positive or (ratios[0].is_real and ratios[0] > 0):
            return True, "equal"
    return False, "wrong value"


def _distinct(items, sp):
    """items without repeats ('(3,17), (3,17)' lists one solution twice)."""
    out = []
    for x in items:
        if not any(_compare(x, y, sp)[0] for y in out):
            out.append(x)
    return out


def _compare_items(items_a, items_b, sp, ordered):
    """(equal, reason) for two lists of answers, in order or as sets."""
    if len(items_a) != len(items_b):
        if ordered:
            return False, "count"
        a, b = _distinct(items_a, sp), _distinct(items_b, sp)
        if len(a) != len(b) or (len(a), len(b)) == (len(items_a), len(items_b)):
            return False, "count"
        items_a, items_b = a, b
    if ordered:
        for x, y in zip(items_a, items_b):
            ok, why = _compare(x, y, sp)
            if not ok:
                if _compare_items(items_a, items_b, sp, ordered=False)[0]:
                    return False, "order"
                return False, why
        return True, "equal"
    left = list(items_b)
    for x in items_a:  # greedy matching is enough: equality here is transitive
        for k, y in enumerate(left):
            if _compare(x, y, sp)[0]:
                del left[k]
                break
        else:
            return False, "wrong value"
    return True, "equal"


def _named_value(eq, sp):
    """The value an equation gives a name: 'x = 3', 'AB = 4', '|PQ| = 3', 'W(n) = 1', '3 = x'
    -> the number; None for an equation to solve ('2x = 10', '7 = 11a + c')."""
    lhs, rhs = eq.lhs, eq.rhs
    if lhs.is_Symbol:
        return rhs if lhs not in rhs.free_symbols else None
    if rhs.is_Symbol and rhs not in lhs.free_symbols:
        return lhs
    if eq.named and lhs.free_symbols:  # no number on the left: a name, not a sum
        if isinstance(lhs, sp.core.function.AppliedUndef) or not lhs.free_symbols & rhs.free_symbols:
            return rhs
    return None


def _rel_interval(rel, sp):
    """'x < 3' as the interval (-oo, 3), '3 \\le x' as [3, oo); None when it is no such bound."""
    if rel.op not in ("<", "\\le"):
        return None
    l, r, end = rel.lhs, rel.rhs, ")" if rel.op == "<" else "]"
    if l.is_Symbol and not r.free_symbols:
        return _interval("(", end, -sp.oo, r)
    if r.is_Symbol and not l.free_symbols:
        return _interval("(" if rel.op == "<" else "[", ")", l, sp.oo)
    return None

# ----------------------------------------------------------------------------- the comparison table


class _Sides:
    """What a rule of _RULES gets besides its two answers. A row is tried with the pred as its
    first answer and then with the gold, so a rule compares parts through same() and items(), which
    put the pred's part first again (a decimal pred is an approximation of an exact gold, not the
    other way round). A row of one kind against itself always meets the pred first."""

    def __init__(self, sp, first_is_pred):
        self.sp, self.first_is_pred = sp, first_is_pred

    def same(self, x, y):
        """(equal, reason) for x, a part of the row's first answer, and y, one of the second."""
        return _compare(x, y, self.sp) if self.first_is_pred else _compare(y, x, self.sp)

    def items(self, xs, ys, ordered):
        if self.first_is_pred:
            return _compare_items(xs, ys, self.sp, ordered)
        return _compare_items(ys, xs, self.sp, ordered)


def _exprs(a, b, sides):
    return _compare_expr(a.value, b.value, sides.sp, a.decimal, b.decimal)


def _rels(a, b, sides):
    if a.op != b.op:
        return False, "wrong value"
    return _compare_eq(Eq(a.lhs, a.rhs, False), Eq(b.lhs, b.rhs, False), sides.sp,
                       positive=a.op != "\\ne")  # a negative multiple would flip x < 3 into x > 3


def _seqs(a, b, sides):
    """Sets are unordered; tuples, vectors and intervals are ordered."""
    if a.opener == "\\{" or b.opener == "\\{":
        if a.opener != b.opener:
            return False, "form"
        return sides.items(a.items, b.items, ordered=False)
    ok, why = sides.items(a.items, b.items, ordered=True)
    if not ok or (a.opener, a.closer) == (b.opener, b.closer):
        return ok, why
    if len(a.items) == 2 and a.opener in ("(", "[") and b.opener in ("(", "["):
        return False, "ends"  # same end points, one end open in one and closed in the other
    return False, "form"


def _matrices(a, b, sides):
    if [len(r) for r in a.rows] != [len(r) for r in b.rows]:
        return False, "form"
    return sides.items([c for r in a.rows for c in r], [c for r in b.rows for c in r], ordered=True)


def _assigns(a, b, sides):
    if [n for n, _ in a.pairs] != [n for n, _ in b.pairs]:
        return False, "wrong value"
    return sides.items([x for _, x in a.pairs], [x for _, x in b.pairs], ordered=True)


def _eq_as_value(a, b, sides):
    """x = 3 against 3: the value the equation names; an equation to solve is another form."""
    if isinstance(b, Rel):
        return None
    value = _named_value(a, sides.sp)
    return sides.same(Expr(value, False), b) if value is not None else (False, "form")


def _assign_as_values(a, b, sides):
    """x = 1, y = 2 against (1, 2) (its values in name order) or against '1, 2' (in any order)."""
    values = [Expr(x.rhs, False) for _, x in a.pairs]
    if isinstance(b, Seq):
        return sides.same(Seq(b.opener, b.closer, values), b)
    if isinstance(b, List):
        return sides.same(List(values), b)
    return False, "count"


def _bounds_as_interval(a, b, sides):
    """x > -3 and x < 7 (a list of two bounds) against the interval (-3, 7)."""
    if len(a.items) != 2 or not all(isinstance(x, Rel) for x in a.items):
        return None
    halves = [_rel_interval(x, sides.sp) for x in a.items]
    if not all(halves):
        return None
    lower = [h for h in halves if h.items[1].value == sides.sp.oo]   # (a, oo)
    upper = [h for h in halves if h.items[0].value == -sides.sp.oo]  # (-oo, b)
    if len(lower) != 1 or len(upper) != 1:
        return None
    low, high = lower[0], upper[0]
    return sides.same(Seq(low.opener, high.closer, [low.items[0], high.items[1]]), b)


def _bounds_as_union(a, b, sides):
    """x < 2 or x > 3 against the union (-oo, 2) \\cup (3, oo)."""
    parts = [_rel_interval(x, sides.sp) if isinstance(x, Rel) else (x if isinstance(x, Seq) else None)
             for x in a.items]
    return sides.same(Union(parts), b) if all(parts) else None


def _one_value(a, b, sides):
    """'15 39/40, or 639/40': a list that repeats one value in other forms is that value."""
    distinct = _distinct(a.items, sides.sp)
    return sides.same(a.items[0], b) if len(distinct) == 1 else None


def _rel_as_interval(a, b, sides):
    """x > 3 against (3, oo)."""
    interval = _rel_interval(a, sides.sp)
    return sides.same(interval, b) if interval else None


def _seq_against_list(a, b, sides):
    """(1, 2) against '1, 2': the gold's form says whether the order counts, so a pred list
    against a gold tuple must keep its order, and a pred tuple against a gold list need not."""
    ordered = not sides.first_is_pred and a.opener != "\\{"
    return sides.items(a.items, b.items, ordered)


def _different_kinds(a, b, sides):
    if isinstance(a, Text) or isinstance(b, Text):
        return False, "wrong value"
    many = (List, Seq, Union, Matrix)
    return False, ("count" if isinstance(a, many) != isinstance(b, many) else "form")


def _unordered(a, b, sides):
    return sides.items(a.items, b.items, ordered=False)


# The comparison table: ((kind of the first answer, kind of the second), rule). The first row whose
# kinds fit the pair, taken pred first or else gold first, decides; a rule returns (equal, reason),
# or None to leave the pair to the rows below. So each conversion (an equation read as its value,
# bounds read as an interval) is written once and serves both directions. A new kind of answer
# takes one tuple (answer kinds), one reading rule (_READERS) and its rows here.
_ANY = object
_RULES = [
    ((Text, Text), lambda a, b, sides: (a.words == b.words, "wrong value")),
    ((Expr, Expr), _exprs),
    ((Eq, Eq), lambda a, b, sides: _compare_eq(a, b, sides.sp)),
    ((Rel, Rel), _rels),
    ((Seq, Seq), _seqs),
    ((List, List), _unordered),
    ((Union, Union), _unordered),
    ((Matrix, Matrix), _matrices),
    ((Assign, Assign), _assigns),
    ((Eq, _ANY), _eq_as_value),                # x = 3 against 3
    ((Assign, _ANY), _assign_as_values),       # x = 1, y = 2 against (1, 2)
    ((List, Seq), _bounds_as_interval),        # x > -3, x < 7 against (-3, 7)
    ((List, Union), _bounds_as_union),         # x < 2 or x > 3 against (-oo, 2) \cup (3, oo)
    ((List, _ANY), _one_value),                # 15 39/40, or 639/40 against 639/40
    ((Rel, (Seq, Union)), _rel_as_interval),   # x > 3 against (3, oo)
    ((Seq, List), _seq_against_list),          # (1, 2) against 1, 2
    ((_ANY, _ANY), _different_kinds),
]


def _compare(p, g, sp):
    """(equal, reason) for two read answers, pred first: the verdict of the first row of _RULES
    that gives one."""
    for (first, second), rule in _RULES:
        for a, b, first_is_pred in ((p, g, True), (g, p, False)):
            if isinstance(a, first) and isinstance(b, second):
                verdict = rule(a, b, _Sides(sp, first_is_pred))
                if verdict is not None:
                    return verdict
    raise AssertionError("the last row of _RULES answers every pair")


def _compare_strings(pred, gold):
    """The symbolic comparison on cleaned strings; runs in the worker (or in-process as a fallback)."""
    import sympy
    try:
        g = _read_answer(gold, sympy)
    except TooLarge:
        return False, "gold too large"
    except (Unreadable, ValueError, TypeError, ArithmeticError, RecursionError):
        g = Text(" ".join(gold.lower().split()))
    try:
        p = _read_answer(pred, sympy)
    except TooLarge:
        return False, "too large"
    except (Unreadable, ValueError, TypeError, ArithmeticError, RecursionError):
        same = "".join(pred.lower().split()) == "".join(gold.lower().split())
        if same:
            return True, "equal"
        return False, ("wrong value" if isinstance(g, Text) else "unreadable")  # both text: just different
    try:
        return _compare(p, g, sympy)
    except TooLarge:
        return False, "too large"
    except (ValueError, TypeError, ArithmeticError, RecursionError, AttributeError):
        return False, "unreadable"

# ----------------------------------------------------------------------------- the worker process


def _worker_main():
    """Loop of the worker: one JSON request per line in, one JSON reply per line out."""
    try:  # a runaway expression should die, not eat the machine (Linux/macOS only)
        import resource
        limit = 4 * 1024 ** 3
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    except (ImportError, ValueError, OSError):
        pass
    import sympy  # noqa: F401  (import before 'ready' so no call pays for it)
    sys.setrecursionlimit(4000)
    # requests are read by a thread, so the end of stdin (the caller is gone) is seen mid-computation
    requests = queue.Queue()
    threading.Thread(target=_worker_read, args=(sys.stdin, requests), daemon=True).start()
    threading.Thread(target=_worker_watch_parent, args=(os.getppid(),), daemon=True).start()
    alarm = hasattr(signal, "setitimer")
    print("ready", flush=True)
    while True:
        request = json.loads(requests.get())
        limit = request.get("t")
        if alarm and limit is not None and math.isfinite(limit):
            # SIGALRM's default action ends the process, even inside a C call that holds the GIL
            signal.setitimer(signal.ITIMER_REAL, limit + ALARM_GRACE)
        try:
            equal, why = _compare_strings(request["p"], request["g"])
        except Exception:  # noqa: BLE001 - keep serving: one bad answer must not kill the worker
            equal, why = False, "unreadable"
        finally:
            if alarm:
                signal.setitimer(signal.ITIMER_REAL, 0)
        print(json.dumps({"id": request["id"], "equal": equal, "why": why}), flush=True)


def _worker_read(stdin, requests):
    """Pass request lines on; at end of input (the caller exited or was killed) end the worker now."""
    try:
        for line in stdin:
            requests.put(line)
    finally:
        os._exit(0)


def _worker_watch_parent(parent):
    """End the worker when its parent dies, even if a forked copy of the caller keeps our stdin
    open. (Not PR_SET_PDEATHSIG: it fires when the thread that started us ends, and workers are
    started from short-lived threads.)"""
    while os.getppid() == parent:
        time.sleep(PARENT_POLL)
    os._exit(0)


class _Worker:
    """One worker process, used by one call at a time (the pool hands it out)."""

    def __init__(self):
        self.proc = None
        self.replies = None
        self.next_id = 0
        self.timed_out = False

    def start(self):
        path = os.path.abspath(__file__)
        # fork+exec (not multiprocessing): the child imports only this file, never __main__.
        # Its own session: a Ctrl-C in the terminal interrupts the caller, which may still finish
        # its work (a training step), not the workers (they exit when our end of stdin closes)
        self.proc = subprocess.Popen(
            [sys.executable, "-u", path, WORKER_FLAG], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, encoding="utf-8",
            cwd=os.path.dirname(path), start_new_session=os.name == "posix")
        self.replies = queue.Queue()
        threading.Thread(target=_pump, args=(self.proc.stdout, self.replies), daemon=True).start()
        try:
            ready = self.replies.get(timeout=START_TIMEOUT)
        except queue.Empty:
            ready = None
        if ready != "ready":
            self.stop()
            raise RuntimeError("verify.py worker did not start (is sympy installed for %s?)"
                               % sys.executable)

    def stop(self):
        proc, self.proc = self.proc, None
        if proc is None:
            return
        try:
            proc.kill()
            proc.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            pass
        for f in (proc.stdin, proc.stdout):
            try:
                f.close()
            except OSError:
                pass

    def ask(self, pred, gold, timeout):
        """(equal, reason), or None when no reply came within timeout (the process is then killed)."""
        self.next_id += 1
        request = json.dumps({"id": self.next_id, "p": pred, "g": gold, "t": timeout})
        deadline = time.monotonic() + timeout  # starts now: waiting for this worker did not count
        try:
            self.proc.stdin.write(request + "\n")
            self.proc.stdin.flush()
            while True:
                reply = self.replies.get(timeout=max(0.0, deadline - time.monotonic()))
                if reply is None:
                    raise queue.Empty  # the worker died (memory limit, crash)
                reply = json.loads(reply)
                if reply.get("id") == self.next_id:
                    return reply["equal"], reply["why"]
        except (queue.Empty, OSError, ValueError):
            self.stop()  # killed mid-work; the pool warms a fresh one in the background
            self.timed_out = True
            return None


class _Pool:
    """Up to MAX_WORKERS worker processes shared by all threads. A call waits for a free worker
    (at most QUEUE_WAIT seconds) and only then starts its own deadline, so one slow answer can
    not use up the time of the calls queued behind it."""

    def __init__(self):
        self.cond = threading.Condition()
        self.idle = []     # started workers nobody is using
        self.count = 0     # workers in use, idle or starting
        self.owner = os.getpid()
        self.fallback = False

    def acquire(self):
        with self.cond:
            give_up = time.monotonic() + QUEUE_WAIT
            while not self.idle and self.count >= MAX_WORKERS:
                left = give_up - time.monotonic()
                if left <= 0:
                    return None
                self.cond.wait(left)
            if self.idle:
                return self.idle.pop()
            self.count += 1
            return _Worker()  # started by the caller, outside the lock

    def release(self, worker):
        if worker.proc is None and worker.timed_out and os.getpid() == self.owner:
            # killed after a timeout: start its replacement now, so the next call does not wait
            worker.timed_out = False
            threading.Thread(target=self.refill, args=(worker,), daemon=True).start()
            return
        with self.cond:
            if worker.proc is None:  # never started
                self.count -= 1
            else:
                self.idle.append(worker)
            self.cond.notify()

    def warm_spare(self):
        """Keep one started worker in reserve while there is demand, so the call after a timeout
        (which killed a worker) does not wait for a new one to import sympy."""
        with self.cond:
            if self.idle or self.count >= MAX_WORKERS or self.fallback or os.getpid() != self.owner:
                return
            self.count += 1
        threading.Thread(target=self.refill, args=(_Worker(),), daemon=True).start()

    def refill(self, worker):
        try:
            worker.start()
        except (OSError, RuntimeError):
            pass  # the next call that needs it starts it (and reports the error)
        self.release(worker)

    def ask(self, pred, gold, timeout):
        """(equal, reason), or None when no worker was free in time or the reply was late."""
        if os.getpid() != self.owner:  # we are a forked child: do not share the parent's pipes
            self.__init__()
        if self.fallback:
            return _compare_strings(pred, gold)
        worker = self.acquire()
        if worker is None:
            return None
        self.warm_spare()
        try:
            if worker.proc is None or worker.proc.poll() is not None:
                worker.stop()
                try:
                    worker.start()  # importing sympy is not part of the call's deadline either
                except (OSError, RuntimeError) as err:
                    warnings.warn("verify.py: %s; comparing in-process without a deadline" % err)
                    self.fallback = True
                    return _compare_strings(pred, gold)
            return worker.ask(pred, gold, timeout)
        finally:
            self.release(worker)

    def running(self):
        with self.cond:
            return self.count

    def shutdown(self):
        with self.cond:
            if os.getpid() == self.owner:
                for worker in self.idle:
                    worker.stop()
            self.count -= len(self.idle)
            self.idle = []


def _pump(stream, replies):
    """Move the worker's output lines into a queue, so the parent can wait with a deadline."""
    try:
        for line in stream:
            replies.put(line.strip())
    except (OSError, ValueError):
        pass
    replies.put(None)


_POOL = _Pool()


def shutdown_worker():
    """Stop the idle worker processes now (they restart on the next symbolic call). Runs at exit."""
    _POOL.shutdown()


atexit.register(shutdown_worker)

# ----------------------------------------------------------------------------- the public checks

_CHOICE_RE = re.compile(r"\(?([A-Ja-j])\)?")
# a chosen letter: 'B', '(B)', '(B) 12', 'B) 12', 'B: 12' - not 'b + c', 'A = 4' or 'A \\cap C'
_PRED_CHOICE_RE = re.compile(r"\(?([A-Ja-j])\)?|\(([A-Ja-j])\)\s*\S.*|([A-Ja-j])[.:)]\s*\S.*", re.S)
_DECIMAL_COMMA_RE = re.compile(r"[+-]?\d+,\d+")


def _decimal_comma(s, other):
    """'0,111' -> '0.111' when the other side is a decimal: a comma that cannot separate thousands
    (which _clean already removed) is a decimal comma; against '2, 3' it stays a list."""
    if _DECIMAL_COMMA_RE.fullmatch(s) and "." in other and _PLAIN_RE.fullmatch(other):
        return s.replace(",", ".")
    return s


def _judge(pred, gold, timeout):
    """(equal, reason) for two bare answers; reason is a short code used by score()."""
    if not isinstance(pred, str) or not pred.strip():
        return False, "no answer"
    if not isinstance(gold, str):
        raise TypeError("gold answer must be a str, got %s" % type(gold).__name__)
    if len(pred) > MAX_ANSWER_CHARS * 10:
        return False, "too long"
    p0, g0 = pred.strip(), gold.strip()
    if _PLAIN_RE.fullmatch(p0) and _PLAIN_RE.fullmatch(g0) and len(p0) + len(g0) < 200:
        return _compare_fractions((Fraction(p0), "." in p0), (Fraction(g0), "." in g0))
    (p, p_unit), (g, g_unit) = _clean_unit(pred), _clean_unit(gold)
    if not p:
        return False, "no answer"  # only decoration, e.g. '$$' or '\\text{}'
    if len(p) > MAX_ANSWER_CHARS:
        return False, "too long"
    if p_unit and g_unit and p_unit != g_unit:
        # both give a unit: it must be the same (15 cm^3 is not 15 cm^2, 1 m is not 100 cm); a unit
        # on one side only is no error, the question may have named it
        return False, "unit"
    if "," in p or "," in g:
        p, g = _decimal_comma(p, g), _decimal_comma(g, p)
    if p == g or (len(g) > 1 and g.isalpha() and p.lower() == g.lower()):  # Yes = yes
        return True, "equal"
    choice = _CHOICE_RE.fullmatch(g)
    if choice:  # multiple choice: compare letters, in either case, whatever decoration surrounds them
        mine = _PRED_CHOICE_RE.fullmatch(p)
        if mine:
            same = next(x for x in mine.groups() if x).upper() == choice.group(1).upper()
            return same, ("equal" if same else "wrong choice")
        if g[-1].isupper() or g.startswith("("):
            return False, "not a choice"
        # a bare lower-case letter may also be a variable: read it as math below
    pv, gv = _VAR_PREFIX_RE.match(p), _VAR_PREFIX_RE.match(g)
    if not (pv and gv and pv.group(1) != gv.group(1)):
        pn, gn = _plain_number(p[pv.end():] if pv else p), _plain_number(g[gv.end():] if gv else g)
        if pn is not None and gn is not None:
            verdict = _compare_fractions(pn, gn)
            p_pct, g_pct = bool(_PERCENT_RE.search(pred)), bool(_PERCENT_RE.search(gold))
            if not verdict[0] and p_pct != g_pct:  # 50% against 0.5
                scale = Fraction(1, 100) if p_pct else Fraction(100)
                if pn[0] * scale == gn[0]:
                    return True, "equal"
            return verdict
    if len(g) > MAX_ANSWER_CHARS:
        return False, "gold too large"
    if "=" in p and _false_chain(p):
        return False, "false chain"
    reply = _POOL.ask(p, g, timeout)
    return reply if reply is not None else (False, "timeout")


def is_equiv(pred, gold, timeout=2.0):
    """True when the bare answer pred equals the bare gold answer (gold second)."""
    if not (isinstance(timeout, (int, float)) and timeout > 0):
        raise ValueError("timeout must be a positive number of seconds, got %r" % (timeout,))
    return _judge(pred, gold, timeout)[0]


def _show(s, limit=80):
    s = " ".join(str(s).split())
    return s if len(s) <= limit else s[:limit - 3] + "..."


_FEEDBACK = {
    "wrong value": "answer {p} differs from the expected value {g} (wrong value)",
    "approximation": "answer {p} is an approximation; give the exact form {g}",
    "order": "answer {p} has the right entries in the wrong order; expected {g}",
    "ends": "answer {p} has the wrong interval ends (open vs closed); expected {g}",
    "count": "answer {p} has a different number of values than the expected {g}",
    "form": "answer {p} has a different form (kind of object) than the expected {g}",
    "unit": "answer {p} is in a different unit than the expected {g}; units are not converted",
    "wrong choice": "answer {p} is the wrong choice; expected {g}",
    "not a choice": "answer {p} is not a choice letter; expected the letter {g}",
    "unreadable": "answer {p} could not be read as math; write it in plain LaTeX, expected {g}",
    "too large": "answer {p} is too large to check (huge power, factorial or nesting); "
                 "simplify it, expected {g}",
    "too long": "answer is {n} characters long; give one short final answer in \\boxed{{}}",
    "timeout": "answer {p} could not be checked against {g} in time; give a simpler closed form",
    "gold too large": "the expected answer {g} could not be read; this problem cannot be scored",
    "no answer": "no final answer found: end with \\boxed{{ANSWER}}",
    "false chain": "answer {p} is not true: its sides have different values; end with the right value",
    "operation": "an operation still to do: {p}; give the number it comes to",
    "empty box": "the final \\boxed{{}} is empty and no answer stands beside it; put the answer inside it",
    # no commitment (_committed): {d} is what the text says around its answer
    "retracted": "answer {p} is retracted ('{d}') and no other value replaces it; end on the one answer you keep",
    "cut off": "the text repeats the answer {d} and stops on {p}; end with one final answer",
    "negated": "answer {p} is negated ('{d}'); state the value itself",
    "bound": "answer {p} is a bound or comparison ('{d}'), not a value; give the exact value",
    "operation words": "an operation still to do: {d}; give the number it comes to",
    "hedged": "hedged between {d}; commit to one final answer",
}


def _against_a_number(pred, gold, timeout):
    """score()'s (equal, reason) for a completion's answer when the gold is a plain number: it must be
    a number too. An operation still to do ('18 - 3', '(9 + 4)/1', '2^{4}', '\\sqrt{144}': the question
    said back, which a GRPO run learned to do) is no answer; a/b of two integers and 1.5 \\times 10^3 are
    numbers, and an equation stating the value of an expression in one letter ('732 * k = 0') answers
    with that value (_equation_value)."""
    if _PLAIN_RE.fullmatch(pred.strip()):  # the common case: '72'
        return _judge(pred, gold, timeout)
    s = _clean(pred)
    var = _VAR_PREFIX_RE.match(s)
    bare = s[var.end():] if var else s
    for _ in range(MAX_DEPTH):  # '((13))' is 13, '((9 + 4))' an operation
        wrapped = _outer_bracket(bare)
        if not wrapped or wrapped[0] == "\\{" or "," in wrapped[2]:
            break
        bare = wrapped[2].strip()
    number = _plain_number(bare) is not None
    if not number and re.search(r"\d", bare) and "\\sqrt" not in bare and _ARITHMETIC_RE.fullmatch(bare):
        return False, "operation"
    equal, why = _judge(bare if number and bare != s else pred, gold, timeout)
    if not equal and why == "form":
        value = _equation_value(pred)
        if value is not None:
            return _judge(value, gold, timeout)
    if equal and not number and "." not in normalize(gold) and "," not in bare \
            and not re.search(r"[A-Za-z]", re.sub(r"\\[A-Za-z]+", "", bare)):
        return False, "operation"  # equal to an exact number, not written as one: '\\sqrt{144}', '\\binom{5}{2}'
    return equal, why


def _equation_value(pred):
    """'732 * k = 0', 'n * 0 = 0', 'm + 3 = 10 + 3 = 13': the last side of an equation whose first side
    is an expression in one letter, without powers, when that last side is a plain number and no two
    plain sides differ. score() reads a completion's equation so against a gold that is a plain number (the
    model stating the value of the question's expression); is_equiv, which compares two answers,
    keeps 'x + 1 = 25' an equation, and against an equation gold ('x + 2y = 5') it stays one."""
    s = _clean(pred)
    sides = _chain_sides(s)
    if not sides or _false_chain(s) or _plain_number(sides[-1].strip()) is None:
        return None
    # one letter, no word ('not 4 + 0 = 4') and no power: '2x - y + 3z + 8 = 0' and 'x^2 - 5x + 6 = 0'
    # are equations to solve, not values
    first = re.sub(r"\\[A-Za-z]+", "", sides[0])
    letters = set(re.findall(r"[A-Za-z]", first))
    return sides[-1].strip() if len(letters) == 1 and "^" not in first and not _MATH_WORD_RE.search(first) else None


def score(completion, gold, timeout=2.0):
    """(reward, feedback): 1.0 and 'correct', or 0.0 and one line saying what went wrong.

    completion is a full model output; gold is the bare gold answer (a \\boxed{} or a
    GSM8K '#### x' in it is extracted first). Against a gold that is a plain number a completion is
    read twice more (_against_a_number)."""
    if not isinstance(gold, str):
        raise TypeError("gold answer must be a str, got %s" % type(gold).__name__)
    if not isinstance(completion, str):
        return 0.0, "no completion text"
    if len(completion) > MAX_COMPLETION_CHARS:
        return 0.0, ("completion is %d characters, over the %d limit; reason briefly and end "
                     "with \\boxed{ANSWER}" % (len(completion), MAX_COMPLETION_CHARS))
    if "\\boxed" in gold or "\\fbox" in gold or "####" in gold:
        gold = extract_answer(gold) or gold
    text = _prepared(completion)
    found = _find_answer(text)
    if found is None:
        return 0.0, "no final answer found: end with \\boxed{ANSWER}"
    number = _PLAIN_RE.fullmatch(gold.strip()) or _plain_number(_clean(gold)) is not None
    found, why, detail = _committed(text, found, _single(gold))
    pred = found.answer
    if why is None:
        if not pred.strip() and _BOX_RE.search(completion):
            return 0.0, _FEEDBACK["empty box"].format()
        equal, why = _against_a_number(pred, gold, timeout) if number else _judge(pred, gold, timeout)
        if equal:
            return 1.0, "correct"
    shown_p = _show(normalize(pred)) if len(pred) <= MAX_ANSWER_CHARS else "(too long)"
    shown_g = _show(normalize(gold)) if len(gold) <= MAX_ANSWER_CHARS else "(too long)"
    if why == "unit":
        shown_p, shown_g = shown_p + " " + _clean_unit(pred)[1], shown_g + " " + _clean_unit(gold)[1]
    if why == "operation":  # as written: 'an operation still to do: 9 + 4'
        shown_p = _show(_clean(pred))
    message = _FEEDBACK.get(why, _FEEDBACK["wrong value"])
    return 0.0, message.format(p=shown_p, g=shown_g, n=len(pred), d=_show(detail or "", 60))


@functools.lru_cache(maxsize=1024)
def _single(gold):
    """Whether the gold is one value: not a list, a set, an interval, a relation or '\\pm 2'."""
    g = _clean(gold)  # a gold that is a relation or an approximation ('\\approx 8.24') allows one
    if "=" in g or "\\pm" in g or "\\cup" in g or _RELATION_SIGN_RE.search(g + gold) or g.startswith("\\{"):
        return False
    wrapped = _outer_bracket(g)
    try:
        return len(_split_top(wrapped[2] if wrapped else g, [",", ";"])) == 1
    except TooLarge:
        return False


def main(argv):
    if len(argv) == 2 and argv[1] == WORKER_FLAG:
        _worker_main()
        return 0
    if len(argv) != 3:
        print("usage: python verify.py PRED GOLD   (PRED may be a whole completion; exit 0: equal, 1: not)",
              file=sys.stderr)
        return 2
    completion, gold = argv[1], argv[2]
    try:
        with warnings.catch_warnings():  # the ImportError below says it in one line
            warnings.simplefilter("ignore")
            reward, feedback = score(completion, gold)
    except ImportError:
        print("verify.py: error: comparing these answers needs sympy: pip install sympy", file=sys.stderr)
        return 2
    pred = extract_answer(completion)
    print("verdict:    %s (reward %.1f)" % ("equal" if reward else "different", reward))
    print("extracted:  %s" % pred)
    print("normalized: %s  vs gold  %s" % (normalize(pred) if pred else None, normalize(gold)))
    print("feedback:   %s" % feedback)
    return 0 if reward else 1  # usable in shell scripts: exit 0 when equal


if __name__ == "__main__":
    sys.exit(main(sys.argv))
