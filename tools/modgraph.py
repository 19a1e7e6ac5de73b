import os,re,sys
root='src'
# map file -> module path
mods={}
for dp,dn,fn in os.walk(root):
    for f in fn:
        if not f.endswith('.rs'): continue
        p=os.path.join(dp,f); rel=os.path.relpath(p,root)[:-3].split(os.sep)
        if rel[-1] in ('mod','lib','main'): rel=rel[:-1]
        mods['::'.join(rel)]=p
def strip_tests(src):
    # drop #[cfg(test)] mod x { ... } inline blocks
    out=[];i=0;lines=src.split('\n');skip=False;depth=0
    k=0
    while k<len(lines):
        l=lines[k]
        if l.strip()=='#[cfg(test)]' and k+1<len(lines) and re.match(r'\s*(pub(\(\w+\))? )?mod \w+ \{',lines[k+1]):
            depth=0
            k+=1
            while k<len(lines):
                depth+=lines[k].count('{')-lines[k].count('}')
                k+=1
                if depth<=0: break
            continue
        out.append(l); k+=1
    return '\n'.join(out)
TEST_FILES=lambda m: m.split('::')[-1] in ('tests','properties','bounds_and_locks') or 'tests' in m.split('::') or m.endswith('netlink_encode')
def resolve(m, path):
    """longest existing module prefix of path (list)"""
    for n in range(len(path),0,-1):
        c='::'.join(path[:n])
        if c in mods: return c
    return None
edges={}
for m,p in mods.items():
    if TEST_FILES(m) or m=='': continue
    src=strip_tests(open(p).read())
    src=re.sub(r'//.*','',src)
    deps=set()
    me=m.split('::') if m else []
    # crate:: paths incl. use groups
    for u in re.finditer(r'\buse\s+([^;]+);',src):
        body=u.group(1).replace('\n',' ')
        def expand(prefix, b):
            b=b.strip()
            mm=re.match(r'^([\w:]*?)::\{(.*)\}$',b,re.S)
            if mm:
                pre=prefix+[x for x in mm.group(1).split('::') if x]
                # split top-level commas
                d=0;cur='';parts=[]
                for ch in mm.group(2):
                    if ch=='{': d+=1
                    if ch=='}': d-=1
                    if ch==',' and d==0: parts.append(cur);cur=''
                    else: cur+=ch
                parts.append(cur)
                r=[]
                for x in parts:
                    if x.strip(): r+=expand(pre,x)
                return r
            return [prefix+[x for x in re.split(r'\s+as\s+',b)[0].split('::') if x]]
        for path in expand([],body):
            deps.add(tuple(path))
    for mm in re.finditer(r'\b((?:crate|super|self)(?:::\w+)+)',src):
        deps.add(tuple(mm.group(1).split('::')))
    out=set()
    for path in deps:
        path=list(path)
        if not path: continue
        if path[0]=='crate': abs_=path[1:]
        elif path[0]=='super':
            base=me[:]
            # file module: super of m is parent
            while path and path[0]=='super':
                base=base[:-1]; path=path[1:]
            abs_=base+path
        elif path[0]=='self': abs_=me+path[1:]
        elif '::'.join(me+[path[0]]) in mods: abs_=me+path   # child module relative
        else: continue
        t=resolve(None,abs_)
        if t is None or t==m: continue
        # ignore edges to own descendants (parent declaring child) 
        if TEST_FILES(t): continue
        out.add(t)
    edges[m]=out
# find SCCs (Tarjan)
idx={};low={};st=[];on=set();sccs=[];c=[0]
sys.setrecursionlimit(10000)
def sc(v):
    idx[v]=low[v]=c[0];c[0]+=1;st.append(v);on.add(v)
    for w in edges.get(v,()):
        if w not in edges: continue
        if w not in idx: sc(w);low[v]=min(low[v],low[w])
        elif w in on: low[v]=min(low[v],idx[w])
    if low[v]==idx[v]:
        comp=[]
        while True:
            w=st.pop();on.discard(w);comp.append(w)
            if w==v:break
        sccs.append(comp)
for v in edges:
    if v not in idx: sc(v)
if '-v' in sys.argv:
    for m in sorted(edges): print(m,'->',sorted(edges[m]))
for comp in sccs:
    if len(comp)>1:
        print('CIRCLE:',sorted(comp))
        for a in sorted(comp):
            print('   ',a,'->',sorted(x for x in edges[a] if x in comp))
