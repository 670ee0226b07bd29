"""Families of small string functions: reversing, counting, case, words, ciphers."""
from .family import Family

FAMILIES = [
    Family(
        "reverse_string", names=("reverse_string", "reverse_str", "reversed_text", "string_reverse"),
        params=(("s",), ("text",), ("word",)), hints=("str", "str"),
        docs=("Return ARG0 reversed.", "Reverse the characters of a string.", "Return the string ARG0 read backwards."),
        bodies=(
            """return ARG0[::-1]""",
            """
result = ""
for ch in ARG0:
    result = ch + result
return result
""",
            """
if not ARG0:
    return ""
return FN(ARG0[1:]) + ARG0[0]
""",
            """return "".join(reversed(ARG0))""",
        ),
        tests=((("",), ""), (("a",), "a"), (("abc",), "cba"), (("hello",), "olleh")), topic="strings"),
    Family(
        "is_palindrome", names=("is_palindrome", "is_string_palindrome", "reads_same_backwards", "is_palindromic_word"),
        params=(("s",), ("text",), ("word",)), hints=("str", "bool"),
        docs=("Return True if ARG0 reads the same forwards and backwards.", "Check whether a string is a palindrome."),
        bodies=(
            """return ARG0 == ARG0[::-1]""",
            """
left, right = 0, len(ARG0) - 1
while left < right:
    if ARG0[left] != ARG0[right]:
        return False
    left += 1
    right -= 1
return True
""",
            """
if len(ARG0) < 2:
    return True
if ARG0[0] != ARG0[-1]:
    return False
return FN(ARG0[1:-1])
""",
        ),
        tests=((("",), True), (("a",), True), (("abba",), True), (("racecar",), True), (("abc",), False),
               (("ab",), False)), topic="strings"),
    Family(
        "count_vowels", names=("count_vowels", "vowel_count", "num_vowels", "count_vowel_letters"),
        params=(("s",), ("text",), ("word",)), hints=("str", "int"),
        docs=("Return how many vowels are in ARG0.", "Count the vowels (a, e, i, o, u) in a string, ignoring case."),
        bodies=(
            """return sum(1 for ch in ARG0.lower() if ch in "aeiou")""",
            """
count = 0
for ch in ARG0:
    if ch in "aeiouAEIOU":
        count += 1
return count
""",
            """
if not ARG0:
    return 0
return (ARG0[0].lower() in "aeiou") + FN(ARG0[1:])
""",
        ),
        tests=((("",), 0), (("xyz",), 0), (("hello",), 2), (("AEIOU",), 5), (("Programming",), 3)), topic="strings"),
    Family(
        "count_consonants", names=("count_consonants", "consonant_count", "num_consonants", "count_consonant_letters"),
        params=(("s",), ("text",), ("word",)), hints=("str", "int"),
        docs=("Return how many consonants are in ARG0.", "Count the letters of a string that are not vowels."),
        bodies=(
            """return sum(1 for ch in ARG0 if ch.isalpha() and ch.lower() not in "aeiou")""",
            """
count = 0
for ch in ARG0.lower():
    if ch.isalpha() and ch not in "aeiou":
        count += 1
return count
""",
            """return len([ch for ch in ARG0.lower() if ch in "bcdfghjklmnpqrstvwxyz"])""",
        ),
        tests=((("",), 0), (("aei",), 0), (("hello",), 3), (("Hello, World!",), 7), (("rhythm",), 6)), topic="strings"),
    Family(
        "capitalize_words",
        names=("capitalize_words", "capitalize_each_word", "upper_first_letters", "capitalize_all_words"),
        params=(("s",), ("text",), ("sentence",)), hints=("str", "str"),
        docs=("Return ARG0 with the first letter of every word capitalized.",
              "Capitalize each word of a space-separated sentence."),
        bodies=(
            """return " ".join(word.capitalize() for word in ARG0.split())""",
            """
words = []
for word in ARG0.split():
    words.append(word[0].upper() + word[1:])
return " ".join(words)
""",
            """return " ".join([w[:1].upper() + w[1:] for w in ARG0.split(" ")])""",
        ),
        tests=((("",), ""), (("hello",), "Hello"), (("hello world",), "Hello World"),
               (("the quick brown fox",), "The Quick Brown Fox"), (("a b",), "A B")), topic="strings"),
    Family(
        "word_count", names=("word_count", "count_words", "num_words", "number_of_words"),
        params=(("s",), ("text",), ("sentence",)), hints=("str", "int"),
        docs=("Return the number of words in ARG0.", "Count the whitespace-separated words in a string."),
        bodies=(
            """return len(ARG0.split())""",
            """
count = 0
in_word = False
for ch in ARG0:
    if ch.isspace():
        in_word = False
    elif not in_word:
        in_word = True
        count += 1
return count
""",
            """return sum(1 for _ in ARG0.split())""",
        ),
        tests=((("",), 0), (("   ",), 0), (("hello",), 1), (("hello world",), 2), (("  a  b c ",), 3)),
        topic="strings"),
    Family(
        "are_anagrams", names=("are_anagrams", "is_anagram", "is_anagram_of", "check_anagrams"),
        params=(("a", "b"), ("first", "second"), ("word1", "word2")), hints=("str", "str", "bool"),
        docs=("Return True if ARG0 and ARG1 are anagrams of each other.",
              "Check whether two strings contain exactly the same letters."),
        bodies=(
            """return sorted(ARG0) == sorted(ARG1)""",
            """
from collections import Counter
return Counter(ARG0) == Counter(ARG1)
""",
            """
if len(ARG0) != len(ARG1):
    return False
counts = {}
for ch in ARG0:
    counts[ch] = counts.get(ch, 0) + 1
for ch in ARG1:
    if counts.get(ch, 0) == 0:
        return False
    counts[ch] -= 1
return True
""",
        ),
        tests=((("listen", "silent"), True), (("abc", "abd"), False), (("", ""), True), (("aab", "abb"), False),
               (("ab", "abc"), False), (("evil", "vile"), True)), topic="strings"),
    Family(
        "count_char", names=("count_char", "count_character", "char_occurrences", "occurrences_of_char"),
        params=(("s", "ch"), ("text", "char"), ("word", "letter")), hints=("str", "str", "int"),
        docs=("Return how many times ARG1 appears in ARG0.", "Count the occurrences of a character in a string."),
        bodies=(
            """return ARG0.count(ARG1)""",
            """
count = 0
for c in ARG0:
    if c == ARG1:
        count += 1
return count
""",
            """return sum(1 for c in ARG0 if c == ARG1)""",
        ),
        tests=((("", "a"), 0), (("banana", "a"), 3), (("banana", "z"), 0), (("a", "a"), 1), (("Aa", "a"), 1)),
        topic="strings"),
    Family(
        "remove_spaces", names=("remove_spaces", "strip_all_spaces", "delete_spaces", "without_spaces"),
        params=(("s",), ("text",), ("sentence",)), hints=("str", "str"),
        docs=("Return ARG0 with every space removed.", "Remove all the spaces from a string."),
        bodies=(
            """return ARG0.replace(" ", "")""",
            """return "".join(ch for ch in ARG0 if ch != " ")""",
            """
result = ""
for ch in ARG0:
    if ch != " ":
        result += ch
return result
""",
        ),
        tests=((("",), ""), (("   ",), ""), (("abc",), "abc"), (("hello world",), "helloworld"), ((" a b c ",), "abc")),
        topic="strings"),
    Family(
        "remove_vowels", names=("remove_vowels", "strip_vowels", "without_vowels", "delete_vowels"),
        params=(("s",), ("text",), ("word",)), hints=("str", "str"),
        docs=("Return ARG0 with all vowels removed.", "Drop the vowels a, e, i, o, u (either case) from a string."),
        bodies=(
            """return "".join(ch for ch in ARG0 if ch.lower() not in "aeiou")""",
            """
result = ""
for ch in ARG0:
    if ch not in "aeiouAEIOU":
        result += ch
return result
""",
            """
if not ARG0:
    return ""
rest = FN(ARG0[1:])
return rest if ARG0[0].lower() in "aeiou" else ARG0[0] + rest
""",
        ),
        tests=((("",), ""), (("aeiou",), ""), (("hello",), "hll"), (("Programming",), "Prgrmmng"), (("xyz",), "xyz")),
        topic="strings"),
    Family(
        "to_uppercase", names=("to_uppercase", "make_uppercase", "uppercase_string", "shout_text"),
        params=(("s",), ("text",), ("word",)), hints=("str", "str"),
        docs=("Return ARG0 with every lowercase letter made uppercase.", "Convert a string to upper case."),
        bodies=(
            """return ARG0.upper()""",
            """
result = ""
for ch in ARG0:
    if "a" <= ch <= "z":
        ch = chr(ord(ch) - 32)
    result += ch
return result
""",
            """return "".join(chr(ord(c) - 32) if "a" <= c <= "z" else c for c in ARG0)""",
        ),
        tests=((("",), ""), (("abc",), "ABC"), (("Hello, World!",), "HELLO, WORLD!"), (("ABC",), "ABC"),
               (("a1b2",), "A1B2")), topic="strings"),
    Family(
        "is_pangram", names=("is_pangram", "uses_every_letter", "contains_all_letters", "check_pangram"),
        params=(("s",), ("text",), ("sentence",)), hints=("str", "bool"),
        docs=("Return True if ARG0 contains every letter of the alphabet.",
              "Check whether a sentence uses all 26 letters, ignoring case."),
        bodies=(
            """return set("abcdefghijklmnopqrstuvwxyz") <= set(ARG0.lower())""",
            """
import string
return all(letter in ARG0.lower() for letter in string.ascii_lowercase)
""",
            """
lowered = ARG0.lower()
for letter in "abcdefghijklmnopqrstuvwxyz":
    if letter not in lowered:
        return False
return True
""",
        ),
        tests=((("",), False), (("The quick brown fox jumps over the lazy dog",), True), (("hello world",), False),
               (("abcdefghijklmnopqrstuvwxyz",), True), (("abcdefghijklmnopqrstuvwxy",), False)), topic="strings"),
    Family(
        "longest_word", names=("longest_word", "find_longest_word", "longest_word_in", "get_longest_word"),
        params=(("s",), ("text",), ("sentence",)), hints=("str", "str"),
        docs=("Return the longest word in ARG0 (the first one on a tie).", "Find the longest word of a sentence."),
        bodies=(
            """return max(ARG0.split(), key=len)""",
            """
best = ""
for word in ARG0.split():
    if len(word) > len(best):
        best = word
return best
""",
            """
words = ARG0.split()
longest = max(len(w) for w in words)
return [w for w in words if len(w) == longest][0]
""",
        ),
        tests=((("a",), "a"), (("the quick brown fox",), "quick"), (("hi there",), "there"),
               (("one three five",), "three"), (("aa bb",), "aa")), topic="strings"),
    Family(
        "first_unique_char",
        names=("first_unique_char", "first_non_repeated_char", "first_non_repeating_character", "first_single_char"),
        params=(("s",), ("text",), ("word",)), hints=("str", "str | None"),
        docs=("Return the first character of ARG0 that appears only once, or None.",
              "Find the first non-repeated character in a string."),
        bodies=(
            """
for ch in ARG0:
    if ARG0.count(ch) == 1:
        return ch
return None
""",
            """
from collections import Counter
counts = Counter(ARG0)
return next((ch for ch in ARG0 if counts[ch] == 1), None)
""",
            """
counts = {}
for ch in ARG0:
    counts[ch] = counts.get(ch, 0) + 1
for ch in ARG0:
    if counts[ch] == 1:
        return ch
return None
""",
        ),
        tests=((("",), None), (("aabb",), None), (("abcab",), "c"), (("swiss",), "w"), (("x",), "x")), topic="strings"),
    Family(
        "char_frequency", names=("char_frequency", "character_counts", "letter_frequencies", "count_each_char"),
        params=(("s",), ("text",), ("word",)), hints=("str", "dict[str, int]"),
        docs=("Return a dict mapping each character of ARG0 to how many times it occurs.",
              "Count how often every character appears in a string."),
        bodies=(
            """
counts = {}
for ch in ARG0:
    counts[ch] = counts.get(ch, 0) + 1
return counts
""",
            """
from collections import Counter
return dict(Counter(ARG0))
""",
            """return {ch: ARG0.count(ch) for ch in ARG0}""",
        ),
        tests=((("",), {}), (("a",), {"a": 1}), (("hello",), {"h": 1, "e": 1, "l": 2, "o": 1}), (("aaa",), {"a": 3}),
               (("abab",), {"a": 2, "b": 2})), topic="strings"),
    Family(
        "reverse_words", names=("reverse_words", "reverse_word_order", "words_backwards", "reverse_sentence"),
        params=(("s",), ("text",), ("sentence",)), hints=("str", "str"),
        docs=("Return the words of ARG0 in reverse order.", "Reverse the order of the words in a sentence."),
        bodies=(
            """return " ".join(reversed(ARG0.split()))""",
            """return " ".join(ARG0.split()[::-1])""",
            """
words = []
for word in ARG0.split():
    words.insert(0, word)
return " ".join(words)
""",
        ),
        tests=((("",), ""), (("hello",), "hello"), (("hello world",), "world hello"),
               (("the quick brown fox",), "fox brown quick the")), topic="strings"),
    Family(
        "starts_with_vowel", names=("starts_with_vowel", "begins_with_vowel", "first_letter_is_vowel"),
        params=(("s",), ("text",), ("word",)), hints=("str", "bool"),
        docs=("Return True if ARG0 begins with a vowel.", "Check whether a word starts with a, e, i, o or u."),
        bodies=(
            """
return len(ARG0) > 0 and ARG0[0].lower() in "aeiou"
""",
            """
if not ARG0:
    return False
return ARG0[0] in "aeiouAEIOU"
""",
            """return ARG0.lower().startswith(("a", "e", "i", "o", "u"))""",
        ),
        tests=((("",), False), (("apple",), True), (("Orange",), True), (("banana",), False), (("y",), False)),
        topic="strings"),
    Family(
        "is_title_case", names=("is_title_case", "all_words_capitalized", "words_start_uppercase", "is_titled"),
        params=(("s",), ("text",), ("sentence",)), hints=("str", "bool"),
        docs=("Return True if every word of ARG0 starts with a capital letter.",
              "Check whether a sentence is in title case."),
        bodies=(
            """return all(word[0].isupper() for word in ARG0.split())""",
            """
for word in ARG0.split():
    if not word[0].isupper():
        return False
return True
""",
            """return [w for w in ARG0.split() if not w[0].isupper()] == []""",
        ),
        tests=((("Hello World",), True), (("Hello world",), False), (("A",), True), (("hello",), False),
               (("The Quick Brown Fox",), True)), topic="strings"),
    Family(
        "caesar_cipher", names=("caesar_cipher", "caesar_shift", "shift_letters", "caesar_encrypt"),
        params=(("text", "shift"), ("s", "k"), ("message", "key")), hints=("str", "int", "str"),
        docs=("Shift every letter of ARG0 by ARG1 places in the alphabet, keeping case and other characters.",
              "Encrypt a message with a Caesar cipher."),
        bodies=(
            """
result = ""
for ch in ARG0:
    if ch.isalpha() and ch.isascii():
        base = ord("a") if ch.islower() else ord("A")
        ch = chr((ord(ch) - base + ARG1) % 26 + base)
    result += ch
return result
""",
            """
import string
low, up = string.ascii_lowercase, string.ascii_uppercase
n = ARG1 % 26
return ARG0.translate(str.maketrans(low + up, low[n:] + low[:n] + up[n:] + up[:n]))
""",
        ),
        tests=((("abc", 1), "bcd"), (("xyz", 3), "abc"), (("Hello, World!", 3), "Khoor, Zruog!"), (("", 5), ""),
               (("abc", 26), "abc"), (("bcd", -1), "abc")), topic="strings"),
    Family(
        "count_words_starting_with",
        names=("count_words_starting_with", "words_beginning_with_count", "count_words_with_initial"),
        params=(("s", "letter"), ("text", "ch"), ("sentence", "initial")), hints=("str", "str", "int"),
        docs=("Return how many words of ARG0 start with ARG1, ignoring case.",
              "Count the words of a sentence that begin with a given letter."),
        bodies=(
            """return sum(1 for w in ARG0.split() if w.lower().startswith(ARG1.lower()))""",
            """
count = 0
for word in ARG0.split():
    if word[0].lower() == ARG1.lower():
        count += 1
return count
""",
            """return len([w for w in ARG0.lower().split() if w[0] == ARG1.lower()])""",
        ),
        tests=((("", "a"), 0), (("apple banana avocado", "a"), 2), (("Apple apple", "a"), 2), (("hello", "x"), 0),
               (("big bad Bob", "B"), 3)), topic="strings"),
    Family(
        "split_into_words", names=("split_into_words", "string_to_words", "words_of", "sentence_to_list"),
        params=(("s",), ("text",), ("sentence",)), hints=("str", "list[str]"),
        docs=("Return the list of space-separated words in ARG0.", "Split a sentence into a list of its words."),
        bodies=(
            """return ARG0.split()""",
            """return [w for w in ARG0.split(" ") if w]""",
            """
words, current = [], ""
for ch in ARG0 + " ":
    if ch != " ":
        current += ch
    elif current:
        words.append(current)
        current = ""
return words
""",
        ),
        tests=((("",), []), (("hello",), ["hello"]), (("hello world",), ["hello", "world"]),
               (("  a  b ",), ["a", "b"]), (("   ",), [])), topic="strings"),
    Family(
        "join_words", names=("join_words", "join_with_separator", "words_to_string", "glue_words"),
        params=(("words", "sep"), ("parts", "separator"), ("items", "delimiter")), hints=("list[str]", "str", "str"),
        docs=("Return the strings of ARG0 joined with ARG1 between them.",
              "Join a list of words into one string using a separator."),
        bodies=(
            """return ARG1.join(ARG0)""",
            """
result = ""
for i, word in enumerate(ARG0):
    if i > 0:
        result += ARG1
    result += word
return result
""",
            """
if not ARG0:
    return ""
if len(ARG0) == 1:
    return ARG0[0]
return ARG0[0] + ARG1 + FN(ARG0[1:], ARG1)
""",
        ),
        tests=((([], "-"), ""), ((["a"], ","), "a"), ((["a", "b", "c"], "-"), "a-b-c"),
               ((["hello", "world"], " "), "hello world"), ((["x", "y"], ""), "xy")), topic="strings"),
    Family(
        "repeat_string", names=("repeat_string", "repeat_text", "string_times", "repeat_str_n_times"),
        params=(("s", "n"), ("text", "times"), ("word", "count")), hints=("str", "int", "str"),
        docs=("Return ARG0 repeated ARG1 times.", "Concatenate a string with itself n times."),
        bodies=(
            """return ARG0 * ARG1""",
            """
result = ""
for _ in range(ARG1):
    result += ARG0
return result
""",
            """
if ARG1 <= 0:
    return ""
return ARG0 + FN(ARG0, ARG1 - 1)
""",
            """return "".join(ARG0 for _ in range(ARG1))""",
        ),
        tests=((("ab", 3), "ababab"), (("x", 0), ""), (("", 5), ""), (("hi", 1), "hi"), (("-", 4), "----")),
        topic="strings"),
    Family(
        "truncate_text", names=("truncate_text", "truncate_string", "shorten_with_ellipsis", "clip_text"),
        params=(("s", "n"), ("text", "limit"), ("message", "max_len")), hints=("str", "int", "str"),
        docs=("Return ARG0 cut to its first ARG1 characters followed by '...' if it is longer than ARG1.",
              "Truncate a string to a maximum length, adding an ellipsis when something was cut."),
        bodies=(
            """
if len(ARG0) <= ARG1:
    return ARG0
return ARG0[:ARG1] + "..."
""",
            """
return ARG0 if len(ARG0) <= ARG1 else ARG0[:ARG1] + "..."
""",
            """
result = ""
for i, ch in enumerate(ARG0):
    if i == ARG1:
        return result + "..."
    result += ch
return result
""",
        ),
        tests=((("hello world", 5), "hello..."), (("hi", 5), "hi"), (("", 3), ""), (("abc", 3), "abc"),
               (("abcd", 3), "abc...")), topic="strings"),
    Family(
        "make_acronym", names=("make_acronym", "acronym_of", "initials_of_words", "build_acronym"),
        params=(("s",), ("text",), ("phrase",)), hints=("str", "str"),
        docs=("Return the acronym of ARG0: the first letter of each word, uppercased.",
              "Build an acronym from the initial letters of a phrase."),
        bodies=(
            """return "".join(word[0].upper() for word in ARG0.split())""",
            """
letters = ""
for word in ARG0.split():
    letters += word[0]
return letters.upper()
""",
            """return "".join([w[0] for w in ARG0.split()]).upper()""",
        ),
        tests=((("portable network graphics",), "PNG"), (("",), ""), (("Python",), "P"),
               (("as soon as possible",), "ASAP"), (("World Health Organization",), "WHO")), topic="strings"),
    Family(
        "is_digit_string", names=("is_digit_string", "all_digits", "is_numeric_string", "only_digits"),
        params=(("s",), ("text",), ("value",)), hints=("str", "bool"),
        docs=("Return True if ARG0 is non-empty and made only of the digits 0-9.",
              "Check whether a string consists entirely of decimal digits."),
        bodies=(
            """return len(ARG0) > 0 and all(ch in "0123456789" for ch in ARG0)""",
            """
if not ARG0:
    return False
for ch in ARG0:
    if not "0" <= ch <= "9":
        return False
return True
""",
            """return ARG0.isdigit()""",
        ),
        tests=((("",), False), (("123",), True), (("12a",), False), (("0",), True), ((" 1",), False),
               (("-5",), False)), topic="strings"),
    Family(
        "count_uppercase", names=("count_uppercase", "count_capitals", "num_uppercase_letters", "uppercase_count"),
        params=(("s",), ("text",), ("word",)), hints=("str", "int"),
        docs=("Return how many uppercase letters are in ARG0.", "Count the capital letters in a string."),
        bodies=(
            """return sum(1 for ch in ARG0 if ch.isupper())""",
            """
count = 0
for ch in ARG0:
    if "A" <= ch <= "Z":
        count += 1
return count
""",
            """return len([ch for ch in ARG0 if ch.isupper()])""",
        ),
        tests=((("",), 0), (("hello",), 0), (("Hello World",), 2), (("ABC",), 3), (("aBcD 1!",), 2)), topic="strings"),
    Family(
        "swap_case", names=("swap_case", "invert_case", "toggle_case", "swap_letter_case"),
        params=(("s",), ("text",), ("word",)), hints=("str", "str"),
        docs=("Return ARG0 with uppercase letters made lowercase and lowercase letters made uppercase.",
              "Swap the case of every letter in a string."),
        bodies=(
            """return ARG0.swapcase()""",
            """
result = ""
for ch in ARG0:
    result += ch.lower() if ch.isupper() else ch.upper()
return result
""",
            """return "".join(c.lower() if c.isupper() else c.upper() for c in ARG0)""",
        ),
        tests=((("",), ""), (("Hello",), "hELLO"), (("ABC def",), "abc DEF"), (("123!",), "123!"), (("a",), "A")),
        topic="strings"),
    Family(
        "remove_duplicate_chars",
        names=("remove_duplicate_chars", "unique_chars_in_order", "dedupe_characters", "drop_repeated_chars"),
        params=(("s",), ("text",), ("word",)), hints=("str", "str"),
        docs=("Return ARG0 keeping only the first occurrence of each character.",
              "Remove repeated characters from a string while keeping their order."),
        bodies=(
            """
result = ""
for ch in ARG0:
    if ch not in result:
        result += ch
return result
""",
            """return "".join(dict.fromkeys(ARG0))""",
            """
seen = set()
out = []
for ch in ARG0:
    if ch not in seen:
        seen.add(ch)
        out.append(ch)
return "".join(out)
""",
        ),
        tests=((("",), ""), (("abc",), "abc"), (("banana",), "ban"), (("aaaa",), "a"), (("mississippi",), "misp")),
        topic="strings"),
]
