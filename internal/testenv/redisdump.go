package testenv

import (
	"context"
	"strings"

	goredis "github.com/redis/go-redis/v9"
)

// RedisDump returns every key and value in the Redis at addr as text, so
// tests can search it for secrets that must never be there, and the number
// of keys it read.
func RedisDump(ctx context.Context, addr string) (string, int, error) {
	c := goredis.NewClient(&goredis.Options{Addr: addr})
	defer c.Close()
	var b strings.Builder
	n := 0
	iter := c.Scan(ctx, 0, "*", 1000).Iterator()
	for iter.Next(ctx) {
		k := iter.Val()
		n++
		b.WriteString(k + "\n")
		typ, err := c.Type(ctx, k).Result()
		if err != nil {
			return "", n, err
		}
		var vals []string
		switch typ {
		case "string":
			v, _ := c.Get(ctx, k).Result()
			vals = []string{v}
		case "set":
			vals, _ = c.SMembers(ctx, k).Result()
		case "hash":
			h, _ := c.HGetAll(ctx, k).Result()
			for hk, hv := range h {
				vals = append(vals, hk+"="+hv)
			}
		case "list":
			vals, _ = c.LRange(ctx, k, 0, -1).Result()
		case "zset":
			vals, _ = c.ZRange(ctx, k, 0, -1).Result()
		}
		b.WriteString(strings.Join(vals, "\n") + "\n")
	}
	return b.String(), n, iter.Err()
}
