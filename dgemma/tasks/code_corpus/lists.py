"""Families of small list functions: aggregates, filters, searching, sorting, pairing and set-like operations."""
from .family import Family

FAMILIES = [
    Family(
        "sum_of_list", names=("sum_of_list", "list_sum", "sum_list", "total_of_list"),
        params=(("nums",), ("numbers",), ("values",)), hints=("list[int]", "int"), topic="lists",
        docs=("Return the sum of the numbers in ARG0.", "Add up all the elements of a list."),
        bodies=("""return sum(ARG0)""", """
total = 0
for x in ARG0:
    total += x
return total
""", """
if not ARG0:
    return 0
return ARG0[0] + FN(ARG0[1:])
"""),
        tests=((([],), 0), (([5],), 5), (([1, 2, 3],), 6), (([-1, 1],), 0), (([10, 20, 30, 40],), 100))),
    Family(
        "max_of_list", names=("max_of_list", "list_max", "largest_in_list", "find_max_value"),
        params=(("nums",), ("numbers",), ("values",)), hints=("list[int]", "int"), topic="lists",
        docs=("Return the largest number in the non-empty list ARG0.", "Find the maximum element of a list."),
        bodies=("""return max(ARG0)""", """
best = ARG0[0]
for x in ARG0[1:]:
    if x > best:
        best = x
return best
""", """
if len(ARG0) == 1:
    return ARG0[0]
rest = FN(ARG0[1:])
return ARG0[0] if ARG0[0] > rest else rest
""", """return sorted(ARG0)[-1]"""),
        tests=((([5],), 5), (([1, 2, 3],), 3), (([3, 9, 2],), 9), (([-5, -2, -9],), -2), (([4, 4, 4],), 4))),
    Family(
        "min_of_list", names=("min_of_list", "list_min", "smallest_in_list", "find_min_value"),
        params=(("nums",), ("numbers",), ("values",)), hints=("list[int]", "int"), topic="lists",
        docs=("Return the smallest number in the non-empty list ARG0.", "Find the minimum element of a list."),
        bodies=("""return min(ARG0)""", """
smallest = ARG0[0]
for x in ARG0:
    if x < smallest:
        smallest = x
return smallest
""", """
if len(ARG0) == 1:
    return ARG0[0]
return min(ARG0[0], FN(ARG0[1:]))
""", """return sorted(ARG0)[0]"""),
        tests=((([5],), 5), (([1, 2, 3],), 1), (([3, 9, 2],), 2), (([-5, -2, -9],), -9), (([4, 4, 4],), 4))),
    Family(
        "average_of_list", names=("average_of_list", "list_average", "mean_of_list", "compute_average"),
        params=(("nums",), ("numbers",), ("values",)), hints=("list[float]", "float"), topic="lists",
        docs=("Return the arithmetic mean of the non-empty list ARG0.", "Compute the average of a list of numbers."),
        bodies=("""return sum(ARG0) / len(ARG0)""", """
total = 0
for x in ARG0:
    total += x
return total / len(ARG0)
""", """
import statistics
return statistics.fmean(ARG0)
"""),
        tests=((([1, 2, 3],), 2.0), (([5],), 5.0), (([1, 2],), 1.5), (([2, 4, 6, 8],), 5.0), (([-1, 1],), 0.0))),
    Family(
        "dedupe_list", names=("dedupe_list", "remove_list_duplicates", "dedupe_items", "drop_duplicate_items"),
        params=(("items",), ("values",), ("lst",)), hints=("list[int]", "list[int]"), topic="lists",
        docs=("Return ARG0 without duplicates, keeping the first occurrence of each item.",
              "Remove repeated elements from a list while preserving order."),
        bodies=("""
result = []
for x in ARG0:
    if x not in result:
        result.append(x)
return result
""", """return list(dict.fromkeys(ARG0))""", """return [x for i, x in enumerate(ARG0) if x not in ARG0[:i]]"""),
        tests=((([],), []), (([1],), [1]), (([1, 2, 1, 3, 2],), [1, 2, 3]), (([5, 5, 5],), [5]),
               (([3, 1, 2],), [3, 1, 2]))),
    Family(
        "flatten_list", names=("flatten_list", "flatten_one_level", "flatten_nested_list", "concat_sublists"),
        params=(("lists",), ("nested",), ("rows",)), hints=("list[list[int]]", "list[int]"), topic="lists",
        docs=("Return the elements of the sublists of ARG0 in one flat list.", "Flatten a list of lists by one level."),
        bodies=("""
flat = []
for sub in ARG0:
    flat.extend(sub)
return flat
""", """return [x for sub in ARG0 for x in sub]""", """return sum(ARG0, [])"""),
        tests=((([],), []), (([[1, 2], [3]],), [1, 2, 3]), (([[], [1], []],), [1]),
               (([[1], [2], [3, 4]],), [1, 2, 3, 4]), (([[5, 6]],), [5, 6]))),
    Family(
        "count_occurrences", names=("count_occurrences", "count_in_list", "occurrences_in_list", "tally_item"),
        params=(("items", "target"), ("values", "x"), ("lst", "item")),
        hints=("list[int]", "int", "int"), topic="lists",
        docs=("Return how many times ARG1 occurs in ARG0.", "Count the occurrences of a value in a list."),
        bodies=("""return ARG0.count(ARG1)""", """
count = 0
for value in ARG0:
    if value == ARG1:
        count += 1
return count
""", """return sum(1 for value in ARG0 if value == ARG1)"""),
        tests=((([], 1), 0), (([1, 2, 1, 1], 1), 3), (([1, 2, 3], 4), 0), (([7], 7), 1), (([2, 2], 2), 2))),
    Family(
        "square_all", names=("square_all", "squares_of_list", "square_each", "squared_values"),
        params=(("nums",), ("numbers",), ("values",)), hints=("list[int]", "list[int]"), topic="lists",
        docs=("Return a list of the squares of the numbers in ARG0.", "Square every element of a list."),
        bodies=("""return [x * x for x in ARG0]""", """
result = []
for x in ARG0:
    result.append(x ** 2)
return result
""", """return list(map(lambda x: x * x, ARG0))"""),
        tests=((([],), []), (([3],), [9]), (([1, 2, 3],), [1, 4, 9]), (([-2, 0, 2],), [4, 0, 4]))),
    Family(
        "filter_evens", names=("filter_evens", "even_numbers", "keep_evens", "evens_only"),
        params=(("nums",), ("numbers",), ("values",)), hints=("list[int]", "list[int]"), topic="lists",
        docs=("Return the even numbers of ARG0 in their original order.", "Keep only the even elements of a list."),
        bodies=("""return [x for x in ARG0 if x % 2 == 0]""", """
evens = []
for x in ARG0:
    if x % 2 == 0:
        evens.append(x)
return evens
""", """return list(filter(lambda x: x % 2 == 0, ARG0))"""),
        tests=((([],), []), (([1, 3],), []), (([1, 2, 3, 4],), [2, 4]), (([0, -2, 5],), [0, -2]), (([6],), [6]))),
    Family(
        "filter_odds", names=("filter_odds", "odd_numbers", "keep_odds", "odds_only"),
        params=(("nums",), ("numbers",), ("values",)), hints=("list[int]", "list[int]"), topic="lists",
        docs=("Return the odd numbers of ARG0 in their original order.", "Keep only the odd elements of a list."),
        bodies=("""return [x for x in ARG0 if x % 2 == 1]""", """
odds = []
for x in ARG0:
    if x % 2 != 0:
        odds.append(x)
return odds
""", """return list(filter(lambda x: x % 2, ARG0))"""),
        tests=((([],), []), (([2, 4],), []), (([1, 2, 3, 4],), [1, 3]), (([0, -3, 5],), [-3, 5]), (([7],), [7]))),
    Family(
        "filter_positives", names=("filter_positives", "positive_numbers", "keep_positives", "positives_only"),
        params=(("nums",), ("numbers",), ("values",)), hints=("list[int]", "list[int]"), topic="lists",
        docs=("Return the numbers of ARG0 that are greater than zero.", "Keep only the positive elements of a list."),
        bodies=("""return [x for x in ARG0 if x > 0]""", """
result = []
for x in ARG0:
    if x > 0:
        result.append(x)
return result
""", """
if not ARG0:
    return []
return ([ARG0[0]] if ARG0[0] > 0 else []) + FN(ARG0[1:])
"""),
        tests=((([],), []), (([-1, -2],), []), (([-1, 0, 1, 2],), [1, 2]), (([3],), [3]), (([5, -5, 5],), [5, 5]))),
    Family(
        "reverse_list", names=("reverse_list", "reversed_list", "list_reversed", "reverse_items"),
        params=(("items",), ("values",), ("lst",)), hints=("list[int]", "list[int]"), topic="lists",
        docs=("Return a new list with the elements of ARG0 in reverse order.", "Reverse a list without changing it."),
        bodies=("""return ARG0[::-1]""", """
result = []
for x in ARG0:
    result.insert(0, x)
return result
""", """
if not ARG0:
    return []
return FN(ARG0[1:]) + [ARG0[0]]
""", """return list(reversed(ARG0))"""),
        tests=((([],), []), (([1],), [1]), (([1, 2, 3],), [3, 2, 1]), (([1, 1, 2],), [2, 1, 1]))),
    Family(
        "second_largest", names=("second_largest", "second_biggest", "runner_up_value", "second_max_of_list"),
        params=(("nums",), ("numbers",), ("values",)), hints=("list[int]", "int | None"), topic="lists",
        docs=("Return the second largest distinct value in ARG0, or None if there is none.",
              "Find the second biggest distinct number of a list."),
        bodies=("""
distinct = sorted(set(ARG0))
return distinct[-2] if len(distinct) >= 2 else None
""", """
first = second = None
for x in ARG0:
    if first is None or x > first:
        first, second = x, first
    elif x != first and (second is None or x > second):
        second = x
return second
""", """
rest = [x for x in ARG0 if x != max(ARG0)]
return max(rest) if rest else None
"""),
        tests=((([1, 2, 3],), 2), (([5, 5, 4],), 4), (([3, 3],), None), (([10, -1, 8, 10],), 8), (([],), None))),
    Family(
        "product_of_list", names=("product_of_list", "list_product", "multiply_all", "product_of_items"),
        params=(("nums",), ("numbers",), ("values",)), hints=("list[int]", "int"), topic="lists",
        docs=("Return the product of the numbers in ARG0 (1 for an empty list).", "Multiply all elements of a list."),
        bodies=("""
result = 1
for x in ARG0:
    result *= x
return result
""", """
import math
return math.prod(ARG0)
""", """
if not ARG0:
    return 1
return ARG0[0] * FN(ARG0[1:])
"""),
        tests=((([],), 1), (([5],), 5), (([1, 2, 3, 4],), 24), (([2, 0, 9],), 0), (([-2, 3],), -6))),
    Family(
        "running_sum", names=("running_sum", "cumulative_sum", "prefix_sums", "running_totals"),
        params=(("nums",), ("numbers",), ("values",)), hints=("list[int]", "list[int]"), topic="lists",
        docs=("Return the list whose i-th element is the sum of ARG0[0..i].", "Compute the cumulative sums of a list."),
        bodies=("""
result, total = [], 0
for x in ARG0:
    total += x
    result.append(total)
return result
""", """return [sum(ARG0[:i + 1]) for i in range(len(ARG0))]""", """
from itertools import accumulate
return list(accumulate(ARG0))
"""),
        tests=((([],), []), (([5],), [5]), (([1, 2, 3],), [1, 3, 6]), (([1, -1, 1],), [1, 0, 1]), (([0, 0],), [0, 0]))),
    Family(
        "list_contains", names=("list_contains", "contains_item", "is_in_list", "has_item"),
        params=(("items", "target"), ("values", "x"), ("lst", "item")),
        hints=("list[int]", "int", "bool"), topic="search",
        docs=("Return True if ARG1 is an element of ARG0.", "Check whether a list contains a value."),
        bodies=("""return ARG1 in ARG0""", """
for value in ARG0:
    if value == ARG1:
        return True
return False
""", """return any(value == ARG1 for value in ARG0)"""),
        tests=((([], 1), False), (([1, 2, 3], 2), True), (([1, 2, 3], 4), False), (([5], 5), True))),
    Family(
        "index_of_item", names=("index_of_item", "find_index", "position_of_item", "index_or_minus_one"),
        params=(("items", "target"), ("values", "x"), ("lst", "item")),
        hints=("list[int]", "int", "int"), topic="search",
        docs=("Return the index of the first ARG1 in ARG0, or -1 if it is absent.",
              "Find where a value first appears in a list."),
        bodies=("""
for i, value in enumerate(ARG0):
    if value == ARG1:
        return i
return -1
""", """return ARG0.index(ARG1) if ARG1 in ARG0 else -1""",
        """return next((i for i, value in enumerate(ARG0) if value == ARG1), -1)"""),
        tests=((([], 1), -1), (([4, 5, 6], 5), 1), (([4, 5, 6], 7), -1), (([1, 2, 1], 1), 0), (([9], 9), 0))),
    Family(
        "linear_search", names=("linear_search", "sequential_search", "search_linear"),
        params=(("items", "target"), ("arr", "key"), ("values", "x")),
        hints=("list[int]", "int", "int"), topic="search",
        docs=("Search ARG0 from left to right for ARG1 and return its index, or -1.",
              "Perform a linear search of a list."),
        bodies=("""
for i in range(len(ARG0)):
    if ARG0[i] == ARG1:
        return i
return -1
""", """
i = 0
while i < len(ARG0):
    if ARG0[i] == ARG1:
        return i
    i += 1
return -1
""", """
if not ARG0:
    return -1
if ARG0[0] == ARG1:
    return 0
rest = FN(ARG0[1:], ARG1)
return -1 if rest == -1 else rest + 1
"""),
        tests=((([], 3), -1), (([3, 1, 4], 4), 2), (([3, 1, 4], 5), -1), (([2, 2], 2), 0), (([7, 8, 9], 7), 0))),
    Family(
        "binary_search", names=("binary_search", "bisect_search", "binary_search_index"),
        params=(("items", "target"), ("arr", "key"), ("sorted_nums", "x")),
        hints=("list[int]", "int", "int"), topic="search",
        docs=("Return the index of ARG1 in the sorted list ARG0 using binary search, or -1 if it is absent.",
              "Find a value in a sorted list by repeatedly halving the search range."),
        bodies=("""
lo, hi = 0, len(ARG0) - 1
while lo <= hi:
    mid = (lo + hi) // 2
    if ARG0[mid] == ARG1:
        return mid
    if ARG0[mid] < ARG1:
        lo = mid + 1
    else:
        hi = mid - 1
return -1
""", """
if not ARG0:
    return -1
mid = len(ARG0) // 2
if ARG0[mid] == ARG1:
    return mid
if ARG1 < ARG0[mid]:
    return FN(ARG0[:mid], ARG1)
rest = FN(ARG0[mid + 1:], ARG1)
return -1 if rest == -1 else mid + 1 + rest
""", """
import bisect
i = bisect.bisect_left(ARG0, ARG1)
return i if i < len(ARG0) and ARG0[i] == ARG1 else -1
"""),
        tests=((([1, 3, 5, 7, 9], 7), 3), (([], 1), -1), (([1], 1), 0), (([1, 3, 5], 4), -1),
               (([2, 4, 6, 8, 10, 12], 2), 0), (([2, 4, 6, 8], 8), 3), (([2, 4, 6], 9), -1))),
    Family(
        "bubble_sort", names=("bubble_sort", "bubble_sorted", "sort_by_bubbling"),
        params=(("items",), ("nums",), ("arr",)), hints=("list[int]", "list[int]"), topic="lists",
        docs=("Return a sorted copy of ARG0 using bubble sort.", "Sort a list by repeatedly swapping adjacent items."),
        bodies=("""
result = list(ARG0)
for i in range(len(result)):
    for j in range(len(result) - 1 - i):
        if result[j] > result[j + 1]:
            result[j], result[j + 1] = result[j + 1], result[j]
return result
""", """
result = ARG0[:]
swapped = True
while swapped:
    swapped = False
    for j in range(len(result) - 1):
        if result[j] > result[j + 1]:
            result[j], result[j + 1] = result[j + 1], result[j]
            swapped = True
return result
""", """return sorted(ARG0)"""),
        tests=((([],), []), (([1],), [1]), (([3, 1, 2],), [1, 2, 3]), (([5, 4, 3, 2, 1],), [1, 2, 3, 4, 5]),
               (([2, 1, 2, 1],), [1, 1, 2, 2]))),
    Family(
        "insertion_sort", names=("insertion_sort", "insertion_sorted", "sort_by_insertion"),
        params=(("items",), ("nums",), ("arr",)), hints=("list[int]", "list[int]"), topic="lists",
        docs=("Return a sorted copy of ARG0 using insertion sort.",
              "Sort a list by inserting each element into the sorted part before it."),
        bodies=("""
result = list(ARG0)
for i in range(1, len(result)):
    key = result[i]
    j = i - 1
    while j >= 0 and result[j] > key:
        result[j + 1] = result[j]
        j -= 1
    result[j + 1] = key
return result
""", """
result = []
for x in ARG0:
    i = 0
    while i < len(result) and result[i] <= x:
        i += 1
    result.insert(i, x)
return result
""", """return sorted(ARG0)"""),
        tests=((([],), []), (([1],), [1]), (([3, 1, 2],), [1, 2, 3]), (([5, 4, 3, 2, 1],), [1, 2, 3, 4, 5]),
               (([2, 1, 2, 1],), [1, 1, 2, 2]))),
    Family(
        "selection_sort", names=("selection_sort", "selection_sorted", "sort_by_selection"),
        params=(("items",), ("nums",), ("arr",)), hints=("list[int]", "list[int]"), topic="lists",
        docs=("Return a sorted copy of ARG0 using selection sort.",
              "Sort a list by repeatedly selecting the smallest remaining element."),
        bodies=("""
result = list(ARG0)
for i in range(len(result)):
    smallest = i
    for j in range(i + 1, len(result)):
        if result[j] < result[smallest]:
            smallest = j
    result[i], result[smallest] = result[smallest], result[i]
return result
""", """
remaining = list(ARG0)
result = []
while remaining:
    smallest = min(remaining)
    remaining.remove(smallest)
    result.append(smallest)
return result
""", """return sorted(ARG0)"""),
        tests=((([],), []), (([1],), [1]), (([3, 1, 2],), [1, 2, 3]), (([5, 4, 3, 2, 1],), [1, 2, 3, 4, 5]),
               (([2, 1, 2, 1],), [1, 1, 2, 2]))),
    Family(
        "merge_sorted_lists", names=("merge_sorted_lists", "merge_two_sorted", "combine_sorted_lists"),
        params=(("a", "b"), ("left", "right"), ("first", "second")),
        hints=("list[int]", "list[int]", "list[int]"), topic="lists",
        docs=("Merge the sorted lists ARG0 and ARG1 into one sorted list.", "Combine two sorted lists in order."),
        bodies=("""
result, i, j = [], 0, 0
while i < len(ARG0) and j < len(ARG1):
    if ARG0[i] <= ARG1[j]:
        result.append(ARG0[i])
        i += 1
    else:
        result.append(ARG1[j])
        j += 1
return result + ARG0[i:] + ARG1[j:]
""", """
if not ARG0 or not ARG1:
    return ARG0 + ARG1
if ARG0[0] <= ARG1[0]:
    return [ARG0[0]] + FN(ARG0[1:], ARG1)
return [ARG1[0]] + FN(ARG0, ARG1[1:])
""", """return sorted(ARG0 + ARG1)"""),
        tests=((([], []), []), (([1, 3, 5], [2, 4, 6]), [1, 2, 3, 4, 5, 6]), (([1, 2], []), [1, 2]), (([], [3]), [3]),
               (([1, 1], [1, 2]), [1, 1, 1, 2]), (([5, 6], [1, 2]), [1, 2, 5, 6]))),
    Family(
        "is_sorted", names=("is_sorted", "is_sorted_ascending", "in_ascending_order", "check_sorted"),
        params=(("items",), ("nums",), ("values",)), hints=("list[int]", "bool"), topic="lists",
        docs=("Return True if ARG0 is in non-decreasing order.", "Check whether a list is sorted ascending."),
        bodies=("""return all(a <= b for a, b in zip(ARG0, ARG0[1:]))""", """
for i in range(len(ARG0) - 1):
    if ARG0[i] > ARG0[i + 1]:
        return False
return True
""", """return ARG0 == sorted(ARG0)"""),
        tests=((([],), True), (([1],), True), (([1, 2, 2, 3],), True), (([3, 1],), False), (([1, 3, 2],), False))),
    Family(
        "chunk_list", names=("chunk_list", "split_into_chunks", "batch_items", "chunks_of_size"),
        params=(("items", "size"), ("values", "n"), ("lst", "chunk_size")),
        hints=("list[int]", "int", "list[list[int]]"), topic="lists",
        docs=("Split ARG0 into consecutive chunks of length ARG1 (the last may be shorter).",
              "Break a list into pieces of a given size."),
        bodies=("""return [ARG0[i:i + ARG1] for i in range(0, len(ARG0), ARG1)]""", """
chunks = []
for i in range(0, len(ARG0), ARG1):
    chunks.append(ARG0[i:i + ARG1])
return chunks
""", """
if not ARG0:
    return []
return [ARG0[:ARG1]] + FN(ARG0[ARG1:], ARG1)
"""),
        tests=((([1, 2, 3, 4, 5], 2), [[1, 2], [3, 4], [5]]), (([], 3), []), (([1, 2, 3], 3), [[1, 2, 3]]),
               (([1, 2], 5), [[1, 2]]), (([1, 2, 3], 1), [[1], [2], [3]]))),
    Family(
        "zip_into_pairs", names=("zip_into_pairs", "pair_up_lists", "pairs_from_lists", "zip_lists"),
        params=(("a", "b"), ("keys", "vals"), ("first", "second")),
        hints=("list[int]", "list[str]", "list[tuple[int, str]]"), topic="lists",
        docs=("Return a list of (x, y) tuples pairing ARG0 with ARG1, stopping at the shorter list.",
              "Pair up the elements of two lists position by position."),
        bodies=("""return list(zip(ARG0, ARG1))""", """
pairs = []
for i in range(min(len(ARG0), len(ARG1))):
    pairs.append((ARG0[i], ARG1[i]))
return pairs
""", """return [(ARG0[i], ARG1[i]) for i in range(min(len(ARG0), len(ARG1)))]"""),
        tests=((([], []), []), (([1, 2], ["a", "b"]), [(1, "a"), (2, "b")]), (([1, 2, 3], ["x"]), [(1, "x")]),
               (([1], ["a", "b"]), [(1, "a")]))),
    Family(
        "dict_from_lists", names=("dict_from_lists", "lists_to_dict", "make_dict_from_keys_values", "build_mapping"),
        params=(("keys", "values"), ("names", "scores"), ("labels", "counts")),
        hints=("list[str]", "list[int]", "dict[str, int]"), topic="lists",
        docs=("Return a dict mapping each element of ARG0 to the element of ARG1 at the same position.",
              "Build a dictionary from a list of keys and a list of values."),
        bodies=("""return dict(zip(ARG0, ARG1))""", """
result = {}
for i in range(min(len(ARG0), len(ARG1))):
    result[ARG0[i]] = ARG1[i]
return result
""", """return {k: v for k, v in zip(ARG0, ARG1)}"""),
        tests=((([], []), {}), ((["a"], [1]), {"a": 1}), ((["a", "b"], [1, 2]), {"a": 1, "b": 2}),
               ((["x", "y"], [3, 2, 1]), {"x": 3, "y": 2}))),
    Family(
        "invert_dict", names=("invert_dict", "swap_keys_and_values", "reverse_mapping", "inverted_dictionary"),
        params=(("d",), ("mapping",), ("table",)), hints=("dict[str, int]", "dict[int, str]"), topic="lists",
        docs=("Return a new dict with the keys and values of ARG0 swapped.", "Invert a dictionary with unique values."),
        bodies=("""return {v: k for k, v in ARG0.items()}""", """
result = {}
for key, value in ARG0.items():
    result[value] = key
return result
""", """return dict(zip(ARG0.values(), ARG0.keys()))"""),
        tests=((({},), {}), (({"a": 1},), {1: "a"}), (({"a": 1, "b": 2},), {1: "a", 2: "b"}),
               (({"x": 1, "y": 2, "z": 3},), {1: "x", 2: "y", 3: "z"}))),
    Family(
        "most_common_element", names=("most_common_element", "most_frequent_item", "mode_of_list", "commonest_value"),
        params=(("items",), ("values",), ("nums",)), hints=("list[int]", "int"), topic="lists",
        docs=("Return the element that occurs most often in the non-empty list ARG0.",
              "Find the most frequent value of a list."),
        bodies=("""
from collections import Counter
return Counter(ARG0).most_common(1)[0][0]
""", """return max(ARG0, key=ARG0.count)""", """
counts = {}
for x in ARG0:
    counts[x] = counts.get(x, 0) + 1
best = ARG0[0]
for x, c in counts.items():
    if c > counts[best]:
        best = x
return best
"""),
        tests=((([1],), 1), (([1, 2, 2, 3],), 2), (([3, 3, 3, 1, 1],), 3), (([4, 5, 5, 4, 5],), 5))),
    Family(
        "pairwise_differences", names=("pairwise_differences", "consecutive_differences", "adjacent_diffs"),
        params=(("nums",), ("numbers",), ("values",)), hints=("list[int]", "list[int]"), topic="lists",
        docs=("Return the differences ARG0[i + 1] - ARG0[i] between neighbouring elements.",
              "Compute the differences between consecutive numbers of a list."),
        bodies=("""return [b - a for a, b in zip(ARG0, ARG0[1:])]""", """
diffs = []
for i in range(1, len(ARG0)):
    diffs.append(ARG0[i] - ARG0[i - 1])
return diffs
""", """return [ARG0[i + 1] - ARG0[i] for i in range(len(ARG0) - 1)]"""),
        tests=((([],), []), (([5],), []), (([1, 4, 9],), [3, 5]), (([5, 3],), [-2]), (([2, 2, 2],), [0, 0]))),
    Family(
        "rotate_list", names=("rotate_list", "rotate_left", "rotate_items_left", "shift_list_left"),
        params=(("items", "k"), ("values", "steps"), ("lst", "n")),
        hints=("list[int]", "int", "list[int]"), topic="lists",
        docs=("Return ARG0 rotated left by ARG1 positions.", "Rotate a list to the left by k places, wrapping around."),
        bodies=("""
if not ARG0:
    return []
shift = ARG1 % len(ARG0)
return ARG0[shift:] + ARG0[:shift]
""", """
result = list(ARG0)
for _ in range(ARG1 % len(ARG0) if ARG0 else 0):
    result.append(result.pop(0))
return result
""", """return [ARG0[(i + ARG1) % len(ARG0)] for i in range(len(ARG0))]"""),
        tests=((([1, 2, 3, 4], 1), [2, 3, 4, 1]), (([], 3), []), (([1, 2, 3], 0), [1, 2, 3]),
               (([1, 2, 3], 4), [2, 3, 1]), (([1], 5), [1]))),
    Family(
        "sum_of_evens", names=("sum_of_evens", "sum_even_numbers", "even_sum", "total_of_evens"),
        params=(("nums",), ("numbers",), ("values",)), hints=("list[int]", "int"), topic="lists",
        docs=("Return the sum of the even numbers in ARG0.", "Add up only the even elements of a list."),
        bodies=("""return sum(x for x in ARG0 if x % 2 == 0)""", """
total = 0
for x in ARG0:
    if x % 2 == 0:
        total += x
return total
""", """
if not ARG0:
    return 0
return (ARG0[0] if ARG0[0] % 2 == 0 else 0) + FN(ARG0[1:])
"""),
        tests=((([],), 0), (([1, 3],), 0), (([1, 2, 3, 4],), 6), (([-2, 5],), -2), (([10],), 10))),
    Family(
        "count_greater_than", names=("count_greater_than", "count_above_threshold", "num_greater_than", "count_above"),
        params=(("nums", "threshold"), ("values", "limit"), ("numbers", "x")),
        hints=("list[int]", "int", "int"), topic="lists",
        docs=("Return how many elements of ARG0 are strictly greater than ARG1.",
              "Count the numbers in a list that exceed a threshold."),
        bodies=("""return sum(1 for v in ARG0 if v > ARG1)""", """
count = 0
for v in ARG0:
    if v > ARG1:
        count += 1
return count
""", """return len([v for v in ARG0 if v > ARG1])"""),
        tests=((([], 0), 0), (([1, 5, 10], 4), 2), (([1, 2, 3], 3), 0), (([5, 5], 4), 2), (([-3, -1], -2), 1))),
    Family(
        "list_intersection", names=("list_intersection", "common_elements", "intersect_lists", "shared_items"),
        params=(("a", "b"), ("first", "second"), ("xs", "ys")),
        hints=("list[int]", "list[int]", "list[int]"), topic="lists",
        docs=("Return the elements of ARG0 that also occur in ARG1, in ARG0's order and without duplicates.",
              "Find the items two lists have in common, keeping first-list order."),
        bodies=("""
result = []
for x in ARG0:
    if x in ARG1 and x not in result:
        result.append(x)
return result
""", """
other = set(ARG1)
return [x for x in dict.fromkeys(ARG0) if x in other]
""", """return [x for i, x in enumerate(ARG0) if x in ARG1 and x not in ARG0[:i]]"""),
        tests=((([], [1]), []), (([1, 2, 3], [2, 3, 4]), [2, 3]), (([1, 1, 2], [1]), [1]), (([1, 2], [3]), []),
               (([3, 2, 1], [1, 2, 3]), [3, 2, 1]))),
    Family(
        "list_union", names=("list_union", "union_of_lists", "merge_unique", "combine_without_duplicates"),
        params=(("a", "b"), ("first", "second"), ("xs", "ys")),
        hints=("list[int]", "list[int]", "list[int]"), topic="lists",
        docs=("Return the distinct elements of ARG0 followed by those of ARG1, in order of first appearance.",
              "Combine two lists into one without duplicates, keeping order."),
        bodies=("""
result = []
for x in ARG0 + ARG1:
    if x not in result:
        result.append(x)
return result
""", """return list(dict.fromkeys(ARG0 + ARG1))""", """
seen, result = set(), []
for x in ARG0 + ARG1:
    if x not in seen:
        seen.add(x)
        result.append(x)
return result
"""),
        tests=((([], []), []), (([1, 2], [2, 3]), [1, 2, 3]), (([1, 1], []), [1]), (([], [3, 3, 4]), [3, 4]),
               (([3, 1], [2, 1]), [3, 1, 2]))),
]
